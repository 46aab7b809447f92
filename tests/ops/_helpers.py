"""Shared builders for the ELSA operator tests."""
import torch

from mmelsa.ops.reference import max_rel_err  # noqa: F401  (shared by the op tests)


PER_SAMPLE = 'per-sample'


def ghost_shape(kind, B, C, K):
    """The shape of a ghost of `kind` (True: shared by the batch; PER_SAMPLE: one per
    sample, DDF's channel filter)."""
    return (B, C, K, K) if kind == PER_SAMPLE else (C, K, K)


def make_inputs(B, C, G, H, W, K, dilation=1, stride=1, ghost_mul=True, ghost_add=True,
                dtype=torch.float64, device='cpu', requires_grad=False, seed=0):
    """Random (x, attn, ghost_mul, ghost_add) on the CPU (reproducible), then moved/cast.
    Each ghost: False (None), True (shared, (C, K, K)) or PER_SAMPLE ((B, C, K, K))."""
    gen = torch.Generator().manual_seed(seed)
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    attn = torch.randn(B, G, K * K, Ho, Wo, generator=gen, dtype=torch.float64)
    gm, ga = (torch.randn(ghost_shape(kind, B, C, K), generator=gen, dtype=torch.float64)
              if kind else None for kind in (ghost_mul, ghost_add))
    out = []
    for t in (x, attn, gm, ga):
        if t is not None:
            t = t.to(device=device, dtype=dtype).requires_grad_(requires_grad)
        out.append(t)
    return tuple(out)


def as_double_cpu(tensors, requires_grad=False):
    """Exact float64 CPU copies (the reference sees the same rounded values as the kernel)."""
    return tuple(None if t is None else
                 t.detach().to('cpu', torch.float64).requires_grad_(requires_grad)
                 for t in tensors)
