"""A small forward + backward of every CUDA code path of the ELSA operator, plain and fused
softmax + ELSA (attn_is_logits=True), generic and tiled kernels (K = 7, stride 1, dilation 1;
NCHW and channels-last inputs), for compute-sanitizer (memcheck / racecheck: the tiled
kernels share memory between threads). Exits non-zero if a result is wrong."""
import sys

import torch

from mmelsa.ops import elsa_attention
from mmelsa.ops.reference import elsa_reference, max_rel_err


def on_device(t, dtype, nhwc, attn=False):
    """t on the GPU; nhwc: x as a channel slice of a wider channels_last map, the attention
    pixel-major, as ELSAAttention passes them (built on the GPU: .to() makes a slice dense)."""
    if not nhwc:
        return t.to('cuda', dtype)
    if attn:
        return t.permute(0, 3, 4, 1, 2).to('cuda', dtype).contiguous().permute(0, 3, 4, 1, 2)
    wide = torch.zeros(t.shape[0], t.shape[1] + 2, *t.shape[2:], device='cuda', dtype=dtype)
    wide = wide.contiguous(memory_format=torch.channels_last)
    wide[:, 2:] = t.to('cuda', dtype)
    return wide[:, 2:]


def run(B, C, G, H, W, K, d, s, dtype, ghosts, fused=False, nhwc=False):
    gen = torch.Generator().manual_seed(K * 100 + d * 10 + s)
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    x = torch.randn(B, C, H, W, generator=gen)
    a = torch.randn(B, G, K * K, Ho, Wo, generator=gen)
    gm = torch.randn(C, K, K, generator=gen) if ghosts[0] else None
    ga = torch.randn(C, K, K, generator=gen) if ghosts[1] else None
    cpu = [t for t in (x, a, gm, ga)]
    dev = [None if t is None else
           (on_device(t, dtype, nhwc, attn=i == 1) if i < 2 else t.to('cuda', dtype))
           .detach().requires_grad_(True) for i, t in enumerate(cpu)]
    out = elsa_attention(*dev, K, d, s, attn_is_logits=fused)
    grad = torch.randn(out.shape, generator=gen)
    live = [t for t in dev if t is not None]
    grads = torch.autograd.grad(out, live, grad.to('cuda', dtype))
    ref_in = [None if t is None else t.detach().cpu().double().requires_grad_(True) for t in dev]
    ref = elsa_reference(ref_in[0], ref_in[1].softmax(2) if fused else ref_in[1], *ref_in[2:],
                         K, d, s)
    ref_live = [t for t in ref_in if t is not None]
    ref_grads = torch.autograd.grad(ref, ref_live, grad.double().to(dtype).double())
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    worst = 0.0
    for g, r in zip((out, ) + tuple(grads), (ref, ) + tuple(ref_grads)):
        worst = max(worst, max_rel_err(g, r))
    ok = worst < tol
    print('%s%s K=%d d=%d s=%d %s ghosts=%s: max rel err %.2e %s' %
          ('fused' if fused else 'plain', ' nhwc' if nhwc else '', K, d, s, dtype, ghosts, worst,
           'ok' if ok else 'WRONG'), flush=True)
    return ok


def main():
    ok = True
    for K, d, s in ((3, 1, 1), (7, 2, 2), (9, 1, 3), (1, 1, 1)):
        for dtype in (torch.float32, torch.bfloat16):
            for fused in (False, True):
                ok &= run(2, 6, 3, 11, 13, K, d, s, dtype, (True, True), fused)
    ok &= run(1, 4, 2, 9, 7, 5, 1, 1, torch.float16, (False, True))
    ok &= run(1, 4, 2, 9, 7, 5, 1, 2, torch.float32, (True, False))
    ok &= run(1, 4, 2, 9, 7, 5, 1, 1, torch.float16, (False, True), True)
    # the tiled kernels: a map of 2 x 2 tiles with partial ones, both layouts, every mask
    for nhwc in (False, True):
        for dtype in (torch.float32, torch.bfloat16):
            for fused in (False, True):
                ok &= run(2, 8, 2, 11, 40, 7, 1, 1, dtype, (True, True), fused, nhwc)
        ok &= run(1, 4, 1, 9, 33, 7, 1, 1, torch.float16, (False, True), True, nhwc)
    torch.cuda.synchronize()
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
