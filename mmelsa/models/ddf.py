"""DDF's modules: :class:`FilterNorm`, :class:`DDFPack`, the decoupled dynamic filter layer
that replaces a 3x3 convolution (docs/ddf_facts.md, sections 2-3), and :class:`DDFUpPack`,
DDF-Up, the upsampling layer (docs/ddf_facts.md, "DDF-Up").

Parameter names follow the authors' release (``spatial_branch.0``, ``channel_branch.1/3``,
``channel_branch.4.std``), so its checkpoints load without renaming. Torch alone is needed.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import calculate_gain

from ..ops import ddf
from ..ops.arguments import DDF_COMBINE, check_hyperparameters

__all__ = ['FilterNorm', 'DDFPack', 'DDFUpPack']

#: added to the standard deviation before dividing by it (the release's constant)
_EPS = 1e-10


class FilterNorm(nn.Module):
    """Standardise each generated filter over its K*K taps, then scale it.

    ``filter_type='spatial'``: input (B, G*K*K, Ho, Wo); per sample, head and pixel the taps get
    zero mean and unit (unbiased) standard deviation, times the constant gain(nonlinearity) / K.
    ``filter_type='channel'``: input (B, C*K*K, ...) with C = ``in_channels``; per sample and
    channel the same standardisation, times the learnable ``std`` (C*K*K,) initialised as a
    standard normal times gain(nonlinearity) / K (``running_std=True``, as DDFPack uses it: a
    parameter, despite its name). No running statistics are kept.

    Args:
        in_channels: G (heads) for 'spatial', C for 'channel'.
        kernel_size: K.
        filter_type: 'spatial' or 'channel'.
        nonlinearity: name for ``torch.nn.init.calculate_gain``.
        running_std: learn a per-tap scale ``std`` instead of the constant.
    """

    def __init__(self, in_channels: int, kernel_size: int, filter_type: str,
                 nonlinearity: str = 'linear', running_std: bool = False):
        super().__init__()
        if filter_type not in ('spatial', 'channel'):
            raise ValueError("FilterNorm: filter_type must be 'spatial' or 'channel', got %r" %
                             (filter_type, ))
        if in_channels < 1:
            raise ValueError('FilterNorm: in_channels must be >= 1, got %r' % (in_channels, ))
        self.in_channels = in_channels
        self.kernel_size = kernel_size
        self.filter_type = filter_type
        gain = calculate_gain(nonlinearity) / kernel_size
        if running_std:
            self.std = nn.Parameter(torch.randn(in_channels * kernel_size**2) * gain)
        else:
            self.gain = gain

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        taps = x.reshape(shape[0], self.in_channels, self.kernel_size**2, -1)
        taps = taps - taps.mean(dim=2, keepdim=True)
        taps = taps / (taps.std(dim=2, keepdim=True) + _EPS)
        x = taps.reshape(shape)
        if hasattr(self, 'std'):
            return x * self.std.reshape((1, -1) + (1, ) * (x.dim() - 2))
        return x * self.gain

    def extra_repr(self) -> str:
        return 'in_channels=%d, kernel_size=%d, filter_type=%s' % (
            self.in_channels, self.kernel_size, self.filter_type)


class DDFPack(nn.Module):
    """The decoupled dynamic filter layer, a drop-in for a K x K convolution of ``in_channels``
    channels to as many (it keeps the channel count, as a depth-wise convolution does).

    Spatial branch: a 1x1 convolution (stride s) to ``head * K*K`` channels and a spatial
    :class:`FilterNorm`: one K x K filter per pixel and head. Channel branch: global average
    pooling, a squeeze-excitation pair of 1x1 convolutions (C -> int(C * se_ratio) -> C*K*K, ReLU
    between) and a channel :class:`FilterNorm`: one K x K filter per channel. They are combined
    by :func:`mmelsa.ops.ddf` ('mul' or 'add').

    Args:
        in_channels: C.
        kernel_size: odd K (3 in DDF-ResNet).
        stride: s; output (H - 1) // s + 1 as a convolution's.
        dilation: d.
        head: G spatial filters per pixel, G dividing C.
        se_ratio: the channel branch's squeeze ratio (> 0).
        nonlinearity: the gain of both filter norms (``calculate_gain``).
        kernel_combine: 'mul' or 'add'.

    Shape: (B, C, H, W) -> (B, C, Ho, Wo).
    """

    def __init__(self, in_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, head: int = 1, se_ratio: float = 0.2,
                 nonlinearity: str = 'relu', kernel_combine: str = 'mul'):
        super().__init__()
        check_hyperparameters(kernel_size, dilation, stride)
        if kernel_size < 3:  # FilterNorm's standard deviation over the taps needs two
            raise ValueError('DDFPack: kernel_size must be >= 3, got %d' % kernel_size)
        if kernel_combine not in DDF_COMBINE:
            raise ValueError("DDFPack: kernel_combine must be 'mul' or 'add', got %r" %
                             (kernel_combine, ))
        if head < 1 or in_channels % head:
            raise ValueError('DDFPack: head (%r) must divide in_channels (%r)' %
                             (head, in_channels))
        mid_channels = int(in_channels * se_ratio)
        if mid_channels < 1:
            raise ValueError('DDFPack: se_ratio * in_channels must be >= 1 (the squeeze width), '
                             'got %r * %r' % (se_ratio, in_channels))
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.head = head
        self.kernel_combine = kernel_combine
        taps = kernel_size**2
        self.spatial_branch = nn.Sequential(
            nn.Conv2d(in_channels, head * taps, 1, stride=stride),
            FilterNorm(head, kernel_size, 'spatial', nonlinearity))
        self.channel_branch = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, mid_channels, 1), nn.ReLU(True),
            nn.Conv2d(mid_channels, in_channels * taps, 1),
            FilterNorm(in_channels, kernel_size, 'channel', nonlinearity, running_std=True))

    def forward(self, x: Tensor) -> Tensor:
        B, C = x.shape[:2]
        K = self.kernel_size
        channel_filter = self.channel_branch(x).reshape(B, C, K, K)
        spatial_filter = self.spatial_branch(x)
        return ddf(x, channel_filter, spatial_filter, K, self.dilation, self.stride,
                   self.kernel_combine)

    def extra_repr(self) -> str:
        return 'kernel_size=%d, stride=%d, dilation=%d, head=%d, kernel_combine=%s' % (
            self.kernel_size, self.stride, self.dilation, self.head, self.kernel_combine)


class DDFUpPack(nn.Module):
    """DDF-Up: r-times upsampling by r*r decoupled dynamic filters and a pixel shuffle
    (docs/ddf_facts.md, "DDF-Up").

    Pair p of ``scale_factor**2`` branch pairs computes a stride-1 :func:`mmelsa.ops.ddf` of the
    input with its own channel branch (as :class:`DDFPack`'s) and its own spatial branch; the
    outputs are stacked so that channel c of pair p is channel c*r*r + p, and
    ``F.pixel_shuffle(r)`` puts pair p = i*r + j at sub-pixel (i, j) of every output r x r block.

    Spatial branch, as the authors' release builds it: without guidance
    (``joint_channels < 1``), a depth-wise ``dw_kernel_size`` convolution of the input, then the
    1x1 convolution to ``head * K*K`` channels and a spatial :class:`FilterNorm`
    (``spatial_branch.p.0``, ``spatial_branch.p.1.0``); with guidance (``joint_channels > 0``),
    the 1x1 convolution and FilterNorm alone, reading the guidance (``spatial_branch.p.0``). The
    guidance has the input's height and width: the filters are those of the input's pixels.

    Differences from the release, which does not run as published: its forward passes the head
    count to the op as an extra argument (its op takes none, so every later argument shifts);
    its depth-wise convolution pads ``K // 2`` where ``dw_kernel_size // 2`` keeps the size (they
    differ once ``dw_kernel_size != K``); its guided 1x1 convolution reads ``in_channels``
    channels where the guidance has ``joint_channels``. Here the head count is the number of
    spatial filters, the padding is ``dw_kernel_size // 2`` and the guided convolution reads
    ``joint_channels``, so the parameter names and shapes are the release's and its weights load.

    Args:
        in_channels: C.
        kernel_size: odd K >= 3.
        scale_factor: r >= 1.
        dilation: d of every DDF.
        head: G spatial filters per pixel, G dividing C.
        se_ratio: the channel branches' squeeze ratio (> 0).
        nonlinearity: the gain of the filter norms (``calculate_gain``).
        dw_kernel_size: odd size (>= 3) of the depth-wise convolution (without guidance).
        joint_channels: the guidance's channels; < 1 for none.
        kernel_combine: 'mul' (the release's default) or 'add'.

    Shape: (B, C, H, W), guidance (B, joint_channels, H, W) -> (B, C, r*H, r*W).
    """

    def __init__(self, in_channels: int, kernel_size: int = 3, scale_factor: int = 2,
                 dilation: int = 1, head: int = 1, se_ratio: float = 0.2,
                 nonlinearity: str = 'linear', dw_kernel_size: int = 3, joint_channels: int = -1,
                 kernel_combine: str = 'mul'):
        super().__init__()
        check_hyperparameters(kernel_size, dilation, 1)
        if kernel_size < 3:  # FilterNorm's standard deviation over the taps needs two
            raise ValueError('DDFUpPack: kernel_size must be >= 3, got %d' % kernel_size)
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or \
                scale_factor < 1:
            raise ValueError('DDFUpPack: scale_factor must be an int >= 1, got %r' %
                             (scale_factor, ))
        if kernel_combine not in DDF_COMBINE:
            raise ValueError("DDFUpPack: kernel_combine must be 'mul' or 'add', got %r" %
                             (kernel_combine, ))
        if head < 1 or in_channels % head:
            raise ValueError('DDFUpPack: head (%r) must divide in_channels (%r)' %
                             (head, in_channels))
        mid_channels = int(in_channels * se_ratio)
        if mid_channels < 1:
            raise ValueError('DDFUpPack: se_ratio * in_channels must be >= 1 (the squeeze '
                             'width), got %r * %r' % (se_ratio, in_channels))
        guided = joint_channels > 0
        # The release raises a smaller depth-wise kernel to 3; asking for one is an error here.
        if not guided and (dw_kernel_size < 3 or dw_kernel_size % 2 == 0):
            raise ValueError('DDFUpPack: dw_kernel_size must be odd and >= 3, got %r' %
                             (dw_kernel_size, ))
        self.kernel_size, self.dilation, self.head = kernel_size, dilation, head
        self.scale_factor = scale_factor
        self.joint_channels = joint_channels if guided else -1
        self.kernel_combine = kernel_combine
        taps = kernel_size**2
        self.spatial_branch = nn.ModuleList()
        self.channel_branch = nn.ModuleList()
        for _ in range(scale_factor**2):
            spatial = nn.Sequential(
                nn.Conv2d(joint_channels if guided else in_channels, head * taps, 1),
                FilterNorm(head, kernel_size, 'spatial', nonlinearity))
            if not guided:
                spatial = nn.Sequential(
                    nn.Conv2d(in_channels, in_channels, dw_kernel_size,
                              padding=dw_kernel_size // 2, groups=in_channels), spatial)
            self.spatial_branch.append(spatial)
            self.channel_branch.append(nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, mid_channels, 1), nn.ReLU(True),
                nn.Conv2d(mid_channels, in_channels * taps, 1),
                FilterNorm(in_channels, kernel_size, 'channel', nonlinearity, running_std=True)))

    def forward(self, x: Tensor, joint_x: Optional[Tensor] = None) -> Tensor:
        B, C, H, W = x.shape
        K, r = self.kernel_size, self.scale_factor
        guide = x if joint_x is None else joint_x
        if guide.shape[0] != B or guide.shape[2:] != x.shape[2:]:
            raise ValueError('DDFUpPack: the guidance must have the input\'s batch, height and '
                             'width, got %s for an input of %s' % (tuple(guide.shape),
                                                                  tuple(x.shape)))
        outs = []
        for spatial_branch, channel_branch in zip(self.spatial_branch, self.channel_branch):
            channel_filter = channel_branch(x).reshape(B, C, K, K)
            outs.append(ddf(x, channel_filter, spatial_branch(guide), K, self.dilation, 1,
                            self.kernel_combine))
        # (B, C, r*r, H, W): pair p becomes channel c*r*r + p, sub-pixel p of pixel_shuffle.
        out = torch.stack(outs, dim=2).reshape(B, C * r * r, H, W)
        return F.pixel_shuffle(out, r)

    def extra_repr(self) -> str:
        return ('kernel_size=%d, scale_factor=%d, dilation=%d, head=%d, joint_channels=%d, '
                'kernel_combine=%s' % (self.kernel_size, self.scale_factor, self.dilation,
                                       self.head, self.joint_channels, self.kernel_combine))
