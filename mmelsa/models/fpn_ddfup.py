"""``DDFUpFPN``: mmdet's FPN with DDF-Up (:class:`mmelsa.models.ddf.DDFUpPack`, x2) as its
top-down upsampling, in the place where mmdet's ``FPN_CARAFE`` puts CARAFE.

Needs mmdet. It is registered as ``type='DDFUpFPN'`` by a builder that imports this module when a
config asks for one (:func:`mmelsa.registry.build_ddf_up_fpn`), so ``import mmelsa`` does not
import mmdet.
"""
from typing import Optional

import torch.nn.functional as F
from mmdet.models.necks import FPN
from torch import Tensor, nn

from .ddf import DDFUpPack

__all__ = ['DDFUpFPN']


def fit_to(x: Tensor, size) -> Tensor:
    """Crop (bottom / right) or edge-pad ``x`` to the spatial ``size``.

    A backbone's stride-2 level has ceil(H / 2) rows, so twice it is H or H + 1: the extra row
    is cropped, as ``FPN_CARAFE`` crops. Pyramids whose levels are not a factor 2 apart get the
    missing rows and columns by replicating the edge rather than a zero border.
    """
    h, w = size
    x = x[..., :h, :w]
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    if dh or dw:
        x = F.pad(x, (0, dw, 0, dh), mode='replicate')
    return x


class DDFUpFPN(FPN):
    """mmdet's :class:`~mmdet.models.necks.FPN` whose top-down step upsamples by DDF-Up.

    Level i's lateral is upsampled x2 by its own :class:`DDFUpPack` (``out_channels`` channels,
    ``upsample_modules[i - 1]``), fitted to level i - 1's lateral size (:func:`fit_to`: cropped
    where it is one larger, as mmdet's FPN interpolates to that size) and added. Everything else,
    the lateral and output convolutions, the extra levels and their names, is mmdet's FPN, so an
    FPN checkpoint loads into all but ``upsample_modules``. The FPN's Xavier ``init_cfg`` also
    initialises the DDF-Up convolutions (as ``FPN_CARAFE``'s does its own before CARAFE's
    specific init; DDF-Up has none: its filter norms fix the filters' scale).

    Args:
        ddf_up_cfg: keyword arguments of :class:`DDFUpPack` other than ``in_channels`` and
            ``scale_factor`` (e.g. ``kernel_size``, ``head``, ``kernel_combine``); the release's
            defaults where absent.
        Others: those of mmdet's FPN, but ``upsample_cfg``, which DDF-Up replaces.
    """

    def __init__(self, *args, ddf_up_cfg: Optional[dict] = None, **kwargs):
        if 'upsample_cfg' in kwargs:
            raise TypeError('DDFUpFPN: upsample_cfg does not apply (DDF-Up upsamples); '
                            'configure the upsampler with ddf_up_cfg')
        super().__init__(*args, **kwargs)
        ddf_up_cfg = dict(ddf_up_cfg or {})
        for key in ('in_channels', 'scale_factor', 'joint_channels'):
            if key in ddf_up_cfg:
                raise TypeError(f'DDFUpFPN: ddf_up_cfg sets {key}, which the FPN fixes')
        self.upsample_modules = nn.ModuleList(
            DDFUpPack(self.out_channels, scale_factor=2, **ddf_up_cfg)
            for _ in range(len(self.lateral_convs) - 1))

    def forward(self, inputs) -> tuple:
        assert len(inputs) == len(self.in_channels)
        laterals = [conv(inputs[i + self.start_level])
                    for i, conv in enumerate(self.lateral_convs)]
        used_backbone_levels = len(laterals)
        for i in range(used_backbone_levels - 1, 0, -1):
            up = self.upsample_modules[i - 1](laterals[i])
            laterals[i - 1] = laterals[i - 1] + fit_to(up, laterals[i - 1].shape[2:])

        # The outputs and extra levels: mmdet's FPN.forward after its top-down path.
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used_backbone_levels)]
        if self.num_outs > len(outs):
            if not self.add_extra_convs:
                for i in range(self.num_outs - used_backbone_levels):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                if self.add_extra_convs == 'on_input':
                    extra_source = inputs[self.backbone_end_level - 1]
                elif self.add_extra_convs == 'on_lateral':
                    extra_source = laterals[-1]
                elif self.add_extra_convs == 'on_output':
                    extra_source = outs[-1]
                else:
                    raise NotImplementedError(self.add_extra_convs)
                outs.append(self.fpn_convs[used_backbone_levels](extra_source))
                for i in range(used_backbone_levels + 1, self.num_outs):
                    if self.relu_before_extra_convs:
                        outs.append(self.fpn_convs[i](F.relu(outs[-1])))
                    else:
                        outs.append(self.fpn_convs[i](outs[-1]))
        return tuple(outs)
