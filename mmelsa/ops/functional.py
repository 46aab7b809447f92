"""The ELSA operator: ``elsa_attention`` and its ``nn.Module`` wrapper.

    out[b, c, i, j] = sum_{u, v < K} x[b, c, i*s + (u - K//2)*d, j*s + (v - K//2)*d]
                      * (ghost_mul[c, u, v] * attn[b, c // (C/G), u*K + v, i, j]
                         + ghost_add[c, u, v])

with zero padding and Ho = (H - 1) // s + 1 (likewise Wo). The kernels live in the native
extension ``mmelsa._ext`` (csrc/), which registers two torch.library operators:

* ``torch.ops.mmelsa.elsa_forward(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride)``
* ``torch.ops.mmelsa.elsa_backward(grad_out, x, attn, ghost_mul, ghost_add, kernel_size,
  dilation, stride, output_mask) -> (grad_x, grad_attn, grad_ghost_mul, grad_ghost_add)``
* ``torch.ops.mmelsa.elsa_softmax_forward(x, logits, ...)`` and
  ``torch.ops.mmelsa.elsa_softmax_backward(grad_out, x, logits, ...)``: the fused softmax + ELSA
  operator (``attn_is_logits=True``): ``attn = softmax(logits)`` over each head's K*K taps,
  taken inside the kernels in the accumulation type (fp32 for fp16 / bf16 / fp32). Autograd
  saves the logits, and the backward recomputes the probabilities from them.

together with their CPU / CUDA kernels and an autocast kernel (C++: under autocast the floating
inputs are cast to the autocast dtype in force, fp16 or bf16, never up to float32). This module
adds what is best written in Python: argument validation with clear messages, the autograd
formula (``torch.library.register_autograd``) and the fake kernels used by FakeTensor tracing and
``torch.compile`` (``torch.library.register_fake``).
"""
from typing import Optional

import torch
from torch import Tensor, nn

from .onnx import elsa_export_form, is_exporting

try:
    from .. import _ext  # noqa: F401  (importing it registers torch.ops.mmelsa.*)
    _EXT_ERROR = None
except ImportError as e:  # the extension was not built
    _ext = None
    _EXT_ERROR = e

__all__ = ['elsa_attention', 'ELSAAttentionOp', 'channels_last_path']


def _require_ext():
    if _ext is None:
        raise RuntimeError(
            'mmelsa.ops.elsa_attention needs the native extension mmelsa._ext, which could not '
            'be imported (%s). Build it with `pip install -e . --no-build-isolation` or '
            '`python setup.py build_ext --inplace` in the repository root.' % _EXT_ERROR)


#: the largest kernel_size, dilation and stride (the C++ checks use the same bound)
MAX_HYPER = 65536


def check_hyperparameters(kernel_size, dilation, stride):
    """Raise TypeError / ValueError naming the argument unless each is an int in range
    (kernel_size odd); shared with :class:`mmelsa.models.ELSAAttention`."""
    for name, value in (('kernel_size', kernel_size), ('dilation', dilation),
                        ('stride', stride)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError('elsa_attention: %s must be an int, got %r' % (name, value))
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError('elsa_attention: kernel_size must be a positive odd integer, got %d' %
                         kernel_size)
    if dilation < 1:
        raise ValueError('elsa_attention: dilation must be >= 1, got %d' % dilation)
    if stride < 1:
        raise ValueError('elsa_attention: stride must be >= 1, got %d' % stride)
    for name, value in (('kernel_size', kernel_size), ('dilation', dilation),
                        ('stride', stride)):
        if value > MAX_HYPER:  # the kernels' index arithmetic and zero padding stay bounded
            raise ValueError('elsa_attention: %s must be <= %d, got %d' % (name, MAX_HYPER,
                                                                          value))


def _autocast_enabled(device_type):
    """``torch.is_autocast_enabled`` for any device; it raises for types without autocast
    (``meta`` in a shape-only trace), which are never under autocast."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return False


def _validate(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride,
              attn_is_logits=False):
    """Raise TypeError / ValueError naming the faulty argument; returns nothing."""
    check_hyperparameters(kernel_size, dilation, stride)
    if not isinstance(attn_is_logits, bool):
        raise TypeError('elsa_attention: attn_is_logits must be a bool, got %r' %
                        (attn_is_logits, ))
    for name, t in (('x', x), ('attn', attn)):
        if not isinstance(t, Tensor):
            raise TypeError('elsa_attention: %s must be a torch.Tensor, got %s' %
                            (name, type(t).__name__))
    for name, t in (('ghost_mul', ghost_mul), ('ghost_add', ghost_add)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError('elsa_attention: %s must be a torch.Tensor or None, got %s' %
                            (name, type(t).__name__))
    if x.dim() != 4:
        raise ValueError('elsa_attention: x must be a 4-D tensor (B, C, H, W), got shape %s' %
                         (tuple(x.shape), ))
    if not x.is_floating_point():
        raise TypeError('elsa_attention: x must be a floating-point tensor, got dtype %s' %
                        x.dtype)
    if attn.dim() != 5:
        raise ValueError('elsa_attention: attn must be a 5-D tensor (B, G, K*K, Ho, Wo), got '
                         'shape %s' % (tuple(attn.shape), ))
    B, C, H, W = x.shape
    G = attn.shape[1]
    K = kernel_size
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    if G < 1 or C % G != 0:
        raise ValueError('elsa_attention: the channels of x (C = %d) must be divisible by the '
                         'heads of attn (G = attn.shape[1] = %d)' % (C, G))
    expected = (B, G, K * K, Ho, Wo)
    if tuple(attn.shape) != expected:
        raise ValueError(
            'elsa_attention: attn must have shape (B, G, K*K, Ho, Wo) = %s for x of shape %s, '
            'kernel_size %d and stride %d, got %s' % (expected, tuple(x.shape), K, stride,
                                                    tuple(attn.shape)))
    tensors = [('attn', attn)]
    for name, t in (('ghost_mul', ghost_mul), ('ghost_add', ghost_add)):
        if t is None:
            continue
        if tuple(t.shape) != (C, K, K):
            raise ValueError('elsa_attention: %s must have shape (C, K, K) = %s, got %s' %
                             (name, (C, K, K), tuple(t.shape)))
        tensors.append((name, t))
    # Under autocast the C++ autocast kernel casts all floating inputs to one dtype, so mixed
    # dtypes (fp32 parameters with bf16 activations) are expected there.
    autocast = _autocast_enabled(x.device.type)
    for name, t in tensors:
        if t.device != x.device:
            raise ValueError('elsa_attention: %s is on %s but x is on %s; all tensors must be on '
                             'one device' % (name, t.device, x.device))
        if t.dtype != x.dtype and not (autocast and t.is_floating_point()):
            raise TypeError('elsa_attention: %s has dtype %s but x has dtype %s; all tensors '
                            'must share one dtype' % (name, t.dtype, x.dtype))


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
    _validate(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride, attn_is_logits)
    if is_exporting():  # standard ops that every exporter knows; no extension needed
        return elsa_export_form(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride,
                                attn_is_logits)
    _require_ext()
    op = torch.ops.mmelsa.elsa_softmax_forward if attn_is_logits else \
        torch.ops.mmelsa.elsa_forward
    return op(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride)


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


# ---------------------------------------------------------------------------------------------
# torch.library registrations done from Python: fake kernels and autograd.
# ---------------------------------------------------------------------------------------------
def _channels_inner(x):
    return x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1 and not x.is_contiguous()


def _cuda_channels_last(x, kernel_size, dilation, stride):
    """The CUDA rule (``elsa_cuda_nhwc``): the configuration of the tiled kernels."""
    return _channels_inner(x) and (kernel_size, dilation, stride) == (7, 1, 1)


def channels_last_path(x, kernel_size=7, dilation=1, stride=1):
    """Whether the operator takes its channels-last path for ``x`` (mirrors ``elsa_use_nhwc``
    in csrc/common/elsa_utils.h; the fake kernels rely on it, so change both together): x
    with its channels innermost (``stride(1) == 1``, C > 1) that is not NCHW-contiguous, such
    as a channels_last tensor or a channel slice of one, on the CPU always, on CUDA with
    kernel_size 7, dilation 1, stride 1. Then x is read in place, the output and grad_x are
    channels_last and grad_attn is laid out (B, Ho, Wo, G, K*K). Every other x takes the NCHW
    kernels."""
    if x.device.type == 'cpu':
        return _channels_inner(x)
    return x.device.type == 'cuda' and _cuda_channels_last(x, kernel_size, dilation, stride)


def _fake_forward(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride):
    B, C, H, W = x.shape
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    if channels_last_path(x, kernel_size, dilation, stride):
        return x.new_empty((B, C, Ho, Wo)).to(memory_format=torch.channels_last)
    return x.new_empty((B, C, Ho, Wo))


def _fake_backward(grad_out, x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride,
                   output_mask):
    def grad_like(t, wanted):
        return t.new_empty(t.shape) if (wanted and t is not None) else x.new_empty((0, ))

    grads = [grad_like(x, output_mask[0]), grad_like(attn, output_mask[1]),
             grad_like(ghost_mul, output_mask[2]), grad_like(ghost_add, output_mask[3])]
    if channels_last_path(x, kernel_size, dilation, stride):  # the channels-last layouts
        if output_mask[0]:
            grads[0] = grads[0].to(memory_format=torch.channels_last)
        if output_mask[1]:
            B, G, KK, Ho, Wo = attn.shape
            grads[1] = x.new_empty((B, Ho, Wo, G, KK)).permute(0, 3, 4, 1, 2)
    return tuple(grads)


def _setup_context(ctx, inputs, output):
    x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride = inputs
    ctx.save_for_backward(x, attn, ghost_mul, ghost_add)
    ctx.hyper = (kernel_size, dilation, stride)


def _backward(ctx, grad_out):
    x, attn, ghost_mul, ghost_add = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [bool(needs[0]), bool(needs[1]), bool(needs[2]) and ghost_mul is not None,
            bool(needs[3]) and ghost_add is not None]
    if not any(mask):
        return None, None, None, None, None, None, None
    grads = torch.ops.mmelsa.elsa_backward(grad_out, x, attn, ghost_mul, ghost_add, *ctx.hyper,
                                           mask)
    gx, gattn, gmul, gadd = (g if m else None for g, m in zip(grads, mask))
    return gx, gattn, gmul, gadd, None, None, None


def _setup_backward_context(ctx, inputs, output):
    grad_out, x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride, mask = inputs
    ctx.save_for_backward(grad_out, x, attn, ghost_mul, ghost_add)
    ctx.hyper = (kernel_size, dilation, stride)
    ctx.mask = list(mask)


def _double_backward(ctx, gg_x, gg_attn, gg_mul, gg_add):
    """Gradients of ``elsa_backward`` (the second derivative of the op), by its linearity.

    With w = ghost_mul * attn + ghost_add, the backward computes grad_x = A(grad_out, w),
    grad_attn = S(grad_out * x) ghost_mul (summed over a head's channels), grad_mul =
    sum(grad_out * x * attn) and grad_add = sum(grad_out * x): each is linear in grad_out and in
    x, and affine in the attention and ghosts. Every derivative of those is therefore again a
    forward or a backward of the operator with other arguments, which are themselves
    differentiable, so third and higher derivatives work the same way.
    """
    grad_out, x, attn, ghost_mul, ghost_add = ctx.saved_tensors
    k, d, s = ctx.hyper
    mask = ctx.mask
    # Gradients arrive only for outputs that were computed and used.
    gg_x = gg_x if mask[0] and gg_x is not None and gg_x.numel() else None
    gg_attn = gg_attn if mask[1] and gg_attn is not None and gg_attn.numel() else None
    gg_mul = gg_mul if mask[2] and gg_mul is not None and gg_mul.numel() else None
    gg_add = gg_add if mask[3] and gg_add is not None and gg_add.numel() else None
    needs = ctx.needs_input_grad
    want_go, want_x, want_attn = needs[0], needs[1], needs[2]
    want_mul = needs[3] and ghost_mul is not None
    want_add = needs[4] and ghost_add is not None
    # gg_mul / gg_add as a ghost pair (ghost_mul=None means ones, so a zero stands in for it).
    ghost_dir = None
    if gg_mul is not None or gg_add is not None:
        ghost_dir = (gg_mul if gg_mul is not None else torch.zeros_like(gg_add), gg_add)

    def fwd(*args):
        return torch.ops.mmelsa.elsa_forward(*args, k, d, s)

    def bwd(values, att, gmul, gadd, out_mask):
        return torch.ops.mmelsa.elsa_backward(grad_out, values, att, gmul, gadd, k, d, s,
                                              out_mask)

    def add(total, term):
        return term if total is None else total + term

    g_go = g_x = g_attn = g_mul = g_add = None
    if want_go:  # the directional derivative of the forward
        if gg_x is not None:
            g_go = add(g_go, fwd(gg_x, attn, ghost_mul, ghost_add))
        if gg_attn is not None:
            g_go = add(g_go, fwd(x, gg_attn, ghost_mul, None))
        if ghost_dir is not None:
            g_go = add(g_go, fwd(x, attn, *ghost_dir))
    if gg_x is not None and (want_attn or want_mul or want_add):  # grad_x depends on w
        grads = bwd(gg_x, attn, ghost_mul, ghost_add, [False, want_attn, want_mul, want_add])
        g_attn = grads[1] if want_attn else None
        g_mul = grads[2] if want_mul else None
        g_add = grads[3] if want_add else None
    if gg_attn is not None and (want_x or want_mul):  # grad_attn depends on x and ghost_mul
        grads = bwd(x, gg_attn, ghost_mul, None, [want_x, False, want_mul, False])
        g_x = add(g_x, grads[0]) if want_x else None
        g_mul = add(g_mul, grads[2]) if want_mul else None
    if ghost_dir is not None and (want_x or want_attn):  # grad_mul/grad_add depend on x, attn
        grads = bwd(x, attn, *ghost_dir, [want_x, want_attn, False, False])
        g_x = add(g_x, grads[0]) if want_x else None
        g_attn = add(g_attn, grads[1]) if want_attn else None
    return g_go, g_x, g_attn, g_mul, g_add, None, None, None, None


# ---------------------------------------------------------------- fused softmax + ELSA
def _softmax_taps(logits, dtype):
    """The probabilities of the fused op, as its kernels define them: softmax over dim 2 in
    the accumulation type (fp32 for fp16 / bf16 / fp32, float64 for float64), then ``dtype``.
    Differentiable; used only where a graph of the backward is needed."""
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return logits.softmax(2, dtype=acc).to(dtype)


def _softmax_setup_context(ctx, inputs, output):
    x, logits, ghost_mul, ghost_add, kernel_size, dilation, stride = inputs
    ctx.save_for_backward(x, logits, ghost_mul, ghost_add)  # the logits, not probabilities
    ctx.hyper = (kernel_size, dilation, stride)


def _softmax_backward(ctx, grad_out):
    """Backward of ``elsa_softmax_forward``.

    Without create_graph (grad mode is off inside a backward then), one call of the fused
    backward op, which recomputes the probabilities from the logits. With create_graph
    (``torch.autograd.grad(..., create_graph=True)``, gradient penalties, gradgradcheck), the
    same gradient is built from differentiable pieces, the softmax and the plain operator's
    backward (whose own autograd gives every higher derivative), so that double backward
    through the fused op is exact, not an error. torch.compile traces backwards with grad mode
    on but never differentiates them again, so it gets the fused op. On the create_graph path
    the probabilities are rounded to the input dtype before the plain backward (exact for
    float64; for fp16 / bf16 the usual rounding of the unfused path).
    """
    x, logits, ghost_mul, ghost_add = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [bool(needs[0]), bool(needs[1]), bool(needs[2]) and ghost_mul is not None,
            bool(needs[3]) and ghost_add is not None]
    if not any(mask):
        return None, None, None, None, None, None, None
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        p = _softmax_taps(logits, x.dtype)
        grads = list(torch.ops.mmelsa.elsa_backward(grad_out, x, p, ghost_mul, ghost_add,
                                                    *ctx.hyper, mask))
        if mask[1]:
            gp = grads[1]
            grads[1] = p * (gp - (p * gp).sum(2, keepdim=True))
    else:
        grads = torch.ops.mmelsa.elsa_softmax_backward(grad_out, x, logits, ghost_mul,
                                                       ghost_add, *ctx.hyper, mask)
    gx, glogits, gmul, gadd = (g if m else None for g, m in zip(grads, mask))
    return gx, glogits, gmul, gadd, None, None, None


if _ext is not None:
    torch.library.register_fake('mmelsa::elsa_forward', _fake_forward)
    torch.library.register_fake('mmelsa::elsa_backward', _fake_backward)
    torch.library.register_autograd('mmelsa::elsa_forward', _backward,
                                    setup_context=_setup_context)
    torch.library.register_autograd('mmelsa::elsa_backward', _double_backward,
                                    setup_context=_setup_backward_context)
    torch.library.register_fake('mmelsa::elsa_softmax_forward', _fake_forward)
    torch.library.register_fake('mmelsa::elsa_softmax_backward', _fake_backward)
    torch.library.register_autograd('mmelsa::elsa_softmax_forward', _softmax_backward,
                                    setup_context=_softmax_setup_context)
