"""DDF-ResNet (docs/ddf_facts.md, section 4): mmpretrain's ResNet in which each Bottleneck's
``conv2``, the 3x3 convolution that carries the block's stride, is a :class:`DDFPack`.

Everything else is mmpretrain's ResNet (stem, 1x1 convolutions, BatchNorm, shortcuts), whose
module names match timm's ResNet that the authors' release built on, so the release's backbone
keys load as they are (``layer1.0.conv2.spatial_branch.0.weight``).
"""
from mmpretrain.models.backbones.resnet import Bottleneck, ResNet

from .ddf import DDFPack

__all__ = ['DDFBottleneck', 'DDFResNet']


class DDFBottleneck(Bottleneck):
    """mmpretrain's Bottleneck with ``conv2`` a :class:`DDFPack` (K = 3, the block's stride
    and dilation) of the block's middle width.

    Args:
        kernel_combine: 'mul' or 'add' (DDF-mul / DDF-add).
        se_ratio: the channel branch's squeeze ratio.
        head: spatial filters per pixel.
        Others: as mmpretrain's ``Bottleneck``.
    """

    def __init__(self, in_channels, out_channels, kernel_combine='mul', se_ratio=0.2, head=1,
                 **kwargs):
        super().__init__(in_channels, out_channels, **kwargs)
        self.conv2 = DDFPack(self.mid_channels, kernel_size=3, stride=self.conv2_stride,
                             dilation=self.dilation, head=head, se_ratio=se_ratio,
                             kernel_combine=kernel_combine)


class DDFResNet(ResNet):
    """DDF-ResNet-50 / 101 / 152: ``type='DDFResNet'``, mmpretrain's ResNet arguments plus
    ``kernel_combine`` ('mul' or 'add'), ``se_ratio`` (0.2) and ``head`` (1) of every
    :class:`DDFPack`.

    Input (B, 3, H, W); outputs as mmpretrain's ResNet (stage ``i`` of stride 4 * 2**i at
    ``out_indices``).
    """

    arch_settings = {
        50: (DDFBottleneck, (3, 4, 6, 3)),
        101: (DDFBottleneck, (3, 4, 23, 3)),
        152: (DDFBottleneck, (3, 8, 36, 3)),
    }

    def __init__(self, depth, kernel_combine='mul', se_ratio=0.2, head=1, **kwargs):
        if depth not in self.arch_settings:
            raise KeyError('DDFResNet: depth must be one of %s, got %r' %
                           (sorted(self.arch_settings), depth))
        self._ddf_args = dict(kernel_combine=kernel_combine, se_ratio=se_ratio, head=head)
        super().__init__(depth, **kwargs)

    def make_res_layer(self, **kwargs):
        return super().make_res_layer(**kwargs, **self._ddf_args)
