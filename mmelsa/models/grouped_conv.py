"""A grouped convolution that exports as a depth-wise one, which ONNX Runtime runs far faster.

ELSA's attention branch convolves q * k with a K x K convolution over groups of a few channels
(4 in ELSA-Swin). ONNX Runtime's CPU provider runs a grouped convolution whose groups are not a
multiple of its SIMD block (16 floats with AVX-512, 8 with AVX2) as an im2col and a matrix
product per group, with only that group's few output channels as rows: slow. A depth-wise
convolution it runs with its blocked direct kernels. With w = C / groups channels per group,
the grouped convolution is a sum of w depth-wise ones over rotated copies of the input::

    out[c] = sum_{r < w} weight[c, (o + r) % w]  (*)  x[c - o + (o + r) % w],   o = c % w

so the export spells it as one Gather of the w rotated channel orders (w x C channels), one
depth-wise Conv and a ReduceSum over r. The sum's order differs from the grouped kernel's, so
the results agree to float rounding, not bit for bit. Measured in ONNX Runtime 1.32 (2 threads,
``dev/bench/onnx_grouped_conv.py``, docs/benchmarks.md, "ONNX Runtime: the band form"):
ELSA-Swin-T's convolutions (w = 4) took 0.33-0.52x the grouped convolution's time at
224 x 224 and 512 x 512.

Eager and compiled runs are the grouped convolution itself; the module holds the same
parameters as :class:`torch.nn.Conv2d`, so checkpoints load unchanged.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.onnx import is_exporting

__all__ = ['GroupedConv2d', 'MAX_EXPORTED_GROUP_WIDTH']

#: widest group exported as depth-wise convolutions (the input is copied this many times)
MAX_EXPORTED_GROUP_WIDTH = 8


class GroupedConv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` whose export, for groups of 2 to
    :data:`MAX_EXPORTED_GROUP_WIDTH` channels in and out, is the depth-wise spelling of the
    module docstring. Same arguments, parameters and eager result as ``nn.Conv2d``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # rotation r of channel c (o = c % w): its group's input c - o + (o + r) % w, and the
        # weight that meets it, weight[c, (o + r) % w]. Fixed index vectors, kept as buffers
        # (not saved) so that an export holds them as constants: ONNX Runtime then folds the
        # weight's Gather into an initializer, which its blocked depth-wise kernel needs (a
        # computed weight runs through the generic convolution, several times slower).
        channels, width = self.in_channels, self.group_width
        c = torch.arange(channels)
        o = c % width
        rotations = range(width)
        self.register_buffer('_sources', torch.cat([c - o + (o + r) % width for r in rotations]),
                             persistent=False)
        self.register_buffer('_taps', torch.cat([c * width + (o + r) % width for r in rotations]),
                             persistent=False)

    @property
    def group_width(self):
        """w: input channels per group."""
        return self.in_channels // self.groups

    def _exports_depthwise(self):
        return (self.groups > 1 and self.out_channels == self.in_channels
                and 1 < self.group_width <= MAX_EXPORTED_GROUP_WIDTH
                and self.padding_mode == 'zeros' and not isinstance(self.padding, str))

    def forward(self, x):
        if not (is_exporting() and self._exports_depthwise()):
            return super().forward(x)
        y = self._depthwise_terms(x)
        return y.reshape(y.shape[0], self.group_width, self.in_channels, y.shape[2],
                         y.shape[3]).sum(1)

    def forward_channels_last(self, x):
        """The same convolution on a channels-last map: (B, H, W, C) -> (B, H, W, C_out).

        When exporting the depth-wise spelling, the convolution's input and terms change layout
        around it and the ReduceSum runs on the channels-last terms; ONNX Runtime moves the
        terms' layout change past the ReduceSum, onto the w times smaller map.
        """
        if not (is_exporting() and self._exports_depthwise()):
            return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self._depthwise_terms(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return y.reshape(y.shape[0], y.shape[1], y.shape[2], self.group_width,
                         self.in_channels).sum(3)

    def _depthwise_terms(self, x):
        """The w depth-wise convolutions of the module docstring, before their sum:
        (B, C, H, W) -> (B, w * C, H', W'), term r in channels [r*C, (r+1)*C)."""
        channels, width = self.in_channels, self.group_width
        weight = self.weight.reshape(channels * width, 1, *self.kernel_size)
        weight = weight.index_select(0, self._taps)
        bias = None if self.bias is None else F.pad(self.bias, (0, (width - 1) * channels))
        return F.conv2d(x.index_select(1, self._sources), weight, bias, self.stride,
                        self.padding, self.dilation, width * channels)
