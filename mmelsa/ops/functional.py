"""The ELSA operator: ``elsa_attention`` and its ``nn.Module`` wrapper.

    out[b, c, i, j] = sum_{u, v < K} x[b, c, i*s + (u - K//2)*d, j*s + (v - K//2)*d]
                      * (ghost_mul[c, u, v] * attn[b, c // (C/G), u*K + v, i, j]
                         + ghost_add[c, u, v])

with zero padding and Ho = (H - 1) // s + 1 (likewise Wo). The kernels live in the native
extension ``mmelsa._ext`` (csrc/), which registers four torch.library operators:

* ``torch.ops.mmelsa.elsa_forward(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride)``
* ``torch.ops.mmelsa.elsa_backward(grad_out, x, attn, ghost_mul, ghost_add, kernel_size,
  dilation, stride, output_mask) -> (grad_x, grad_attn, grad_ghost_mul, grad_ghost_add)``
* ``torch.ops.mmelsa.elsa_softmax_forward(x, logits, ...)`` and
  ``torch.ops.mmelsa.elsa_softmax_backward(grad_out, x, logits, ...)``: the fused softmax + ELSA
  operator (``attn_is_logits=True``): ``attn = softmax(logits)`` over each head's K*K taps,
  taken inside the kernels in the accumulation type (fp32 for fp16 / bf16 / fp32). Autograd
  saves the logits, and the backward recomputes the probabilities from them.

together with their CPU / CUDA kernels and an autocast kernel (C++: under autocast the floating
inputs are cast to the autocast dtype in force, fp16 or bf16, never up to float32). This module is
the public API; the argument checks are in :mod:`~mmelsa.ops.arguments`, the fake kernels and
autograd formulas in :mod:`~mmelsa.ops.registrations`, the export form in
:mod:`~mmelsa.ops.onnx`, the extension loader in :mod:`~mmelsa.ops.extension`.
"""
from typing import Optional

import torch
from torch import Tensor, nn

from . import registrations  # noqa: F401  (fake kernels and autograd of torch.ops.mmelsa.*)
from .arguments import check_hyperparameters, validate, validate_ddf
from .extension import require_ext
from .layout import channels_last_path
from .onnx import elsa_export_form, is_exporting

__all__ = ['elsa_attention', 'ddf', 'ELSAAttentionOp', 'channels_last_path']


def elsa_attention(x: Tensor,
                   attn: Tensor,
                   ghost_mul: Optional[Tensor] = None,
                   ghost_add: Optional[Tensor] = None,
                   kernel_size: int = 7,
                   dilation: int = 1,
                   stride: int = 1,
                   attn_is_logits: bool = False) -> Tensor:
    """Enhanced local self-attention aggregation (the ELSA operator).

    Args:
        x: (B, C, H, W) values.
        attn: (B, G, K*K, Ho, Wo) attention weights, G heads with C % G == 0; taps ordered
            row-major (u*K + v), as ``F.unfold``.
        ghost_mul: (C, K, K) multiplicative ghost head, or None (all ones).
        ghost_add: (C, K, K) additive ghost head, or None (all zeros).
        kernel_size: odd K >= 1.
        dilation: tap spacing d >= 1 (zero padding (K // 2) * d).
        stride: s >= 1; Ho = (H - 1) // s + 1.
        attn_is_logits: if True, ``attn`` holds pre-softmax logits, and the operator uses
            ``attn.softmax(2)`` (each head's K*K taps), computed inside the kernels in fp32
            (float64 for float64 inputs): the probabilities are never stored, and the backward
            recomputes them from the saved logits. Same result as
            ``elsa_attention(x, attn.softmax(2), ...)`` up to rounding.

    Layout: an x whose channels are innermost (``x.stride(1) == 1``), such as a
    ``torch.channels_last`` tensor or a channel slice of one, is read in place and the output
    is ``channels_last`` (see :func:`channels_last_path`), on the CPU always, on CUDA in the
    configuration of its tiled kernels (kernel_size 7, dilation 1, stride 1, ELSA-Swin's);
    ``attn`` is then read without a copy when it is laid out (B, Ho, Wo, G, K*K), as a 1x1
    conv's channels_last output reshaped to (B, G, K*K, Ho, Wo) is. NCHW-contiguous inputs
    use the NCHW kernels; so does a channels-last x on CUDA in other configurations, after a
    copy to NCHW.

    Returns:
        (B, C, Ho, Wo), in the dtype of the inputs (the autocast dtype under autocast).
        Differentiable with respect to x, attn, ghost_mul and ghost_add.
    """
    validate(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride, attn_is_logits)
    if is_exporting():  # standard ops that every exporter knows; no extension needed
        return elsa_export_form(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride,
                                attn_is_logits)
    require_ext()
    op = torch.ops.mmelsa.elsa_softmax_forward if attn_is_logits else \
        torch.ops.mmelsa.elsa_forward
    return op(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride)


def ddf(x: Tensor,
        channel_filter: Tensor,
        spatial_filter: Tensor,
        kernel_size: int = 3,
        dilation: int = 1,
        stride: int = 1,
        combine: str = 'mul') -> Tensor:
    """Decoupled dynamic filter (DDF, "Decoupled Dynamic Filter Networks", CVPR 2021)::

        out[b, c, i, j] = sum_{u, v < K} x[b, c, i*s + (u - K//2)*d, j*s + (v - K//2)*d] * F
        F = channel_filter[b, c, u, v] * spatial_filter[b, g*K*K + u*K + v, i, j]   ('mul')
        F = channel_filter[b, c, u, v] + spatial_filter[b, g*K*K + u*K + v, i, j]   ('add')

    with g = c // (C/G) the head of channel c, zero padding (K // 2) * d and a convolution's
    output size Ho = (H - 1) // s + 1 (likewise Wo). It is the ELSA operator with DDF's filters
    in its places (docs/ddf_facts.md): the spatial filter as the attention, the channel filter
    as a per-sample multiplicative ('mul') or additive ('add') ghost; so every kernel, layout,
    dtype, autograd, ``torch.compile`` and export path of :func:`elsa_attention` serves it.

    Args:
        x: (B, C, H, W).
        channel_filter: (B, C, K, K), one K x K filter per sample and channel.
        spatial_filter: (B, G*K*K, Ho, Wo), one K x K filter per sample, head and output pixel.
        kernel_size: odd K >= 1. dilation: d >= 1. stride: s >= 1.
        combine: 'mul' or 'add'.

    Returns:
        (B, C, Ho, Wo); differentiable with respect to all three tensors.
    """
    heads = validate_ddf(x, channel_filter, spatial_filter, kernel_size, dilation, stride,
                         combine)
    B, _, Ho, Wo = spatial_filter.shape
    attn = spatial_filter.reshape(B, heads, kernel_size * kernel_size, Ho, Wo)
    ghost_mul, ghost_add = (channel_filter, None) if combine == 'mul' else (None, channel_filter)
    return elsa_attention(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride)


class ELSAAttentionOp(nn.Module):
    """``nn.Module`` form of :func:`elsa_attention` with fixed kernel_size, dilation, stride."""

    def __init__(self, kernel_size: int = 7, dilation: int = 1, stride: int = 1):
        super().__init__()
        check_hyperparameters(kernel_size, dilation, stride)
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.stride = stride

    def forward(self,
                x: Tensor,
                attn: Tensor,
                ghost_mul: Optional[Tensor] = None,
                ghost_add: Optional[Tensor] = None) -> Tensor:
        return elsa_attention(x, attn, ghost_mul, ghost_add, self.kernel_size, self.dilation,
                              self.stride)

    def extra_repr(self) -> str:
        return 'kernel_size=%d, dilation=%d, stride=%d' % (self.kernel_size, self.dilation,
                                                          self.stride)
