"""The Python half of the operators' torch.library registrations: fake kernels (FakeTensor
tracing, ``torch.compile``) and autograd formulas, the second derivative included.

The schemas and the CPU / CUDA / autocast kernels are registered by the native extension
(csrc/pytorch/); these are registered once, on import, when the extension is loaded.
"""
import torch

from . import extension
from .layout import channels_last_path

__all__ = []


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


if extension.loaded():
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
