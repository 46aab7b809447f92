"""Check the CUDA kernels and launchers of the ELSA operator without a GPU.

Compiles csrc/pytorch/cuda/elsa_cuda.cu and csrc/common/cuda/elsa_kernel.cuh as host C++ over a
small SIMT emulator (tools/device/emulation/cuda_shim.h: one std::thread per CUDA thread, real
block barriers and warp shuffles), runs forward and backward for every dtype, the specialised and
the generic kernel sizes, dilation, stride and ghost variants, and compares with the float64
unfold reference. It proves the index math, the launch geometry and the reductions; it cannot
prove anything about timing, the memory model or the real compiler (use
tools/device/cuda_checks.sh on a GPU for that). Takes a few minutes (the C++ build included).

    python tools/device/emulate_cuda_kernels.py
"""
import os.path as osp
import sys
import time

import torch
from torch.utils.cpp_extension import load

from mmelsa.ops.reference import elsa_reference, max_rel_err

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))

TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 2.5e-2}
# (B, C, G, H, W, K, dilation, stride)
CASES = [
    (2, 4, 2, 9, 11, 3, 1, 1),
    (1, 3, 3, 6, 7, 1, 1, 1),
    (1, 4, 2, 8, 7, 5, 1, 1),
    (2, 6, 3, 10, 9, 7, 1, 1),
    (1, 2, 1, 12, 11, 9, 1, 1),
    (1, 2, 2, 6, 13, 11, 1, 1),
    (1, 2, 1, 17, 15, 15, 1, 1),
    (2, 4, 4, 3, 4, 7, 1, 1),  # map smaller than the kernel
    (1, 4, 2, 13, 12, 7, 2, 1),
    (1, 3, 1, 14, 13, 3, 1, 2),
    (2, 4, 2, 16, 17, 5, 2, 3),
    (1, 2, 1, 16, 15, 9, 3, 2),
]


def build():
    src = osp.join(ROOT, 'tools', 'device', 'emulation')
    return load(name='elsa_cuda_emulated', sources=[osp.join(src, 'elsa_emulated.cpp')],
                extra_include_paths=[osp.join(ROOT, 'csrc', 'common'),
                                     osp.join(ROOT, 'csrc', 'common', 'cuda')],
                extra_cflags=['-O2'], verbose=False)


def check(emu, case, dtype, ghosts, mask):
    B, C, G, H, W, K, d, s = case
    gen = torch.Generator().manual_seed(hash((case, ghosts)) % 2**31)
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    x = torch.randn(B, C, H, W, generator=gen).to(dtype)
    a = torch.randn(B, G, K * K, Ho, Wo, generator=gen).to(dtype)
    gm = torch.randn(C, K, K, generator=gen).to(dtype) if ghosts[0] else None
    ga = torch.randn(C, K, K, generator=gen).to(dtype) if ghosts[1] else None
    go = torch.randn(B, C, Ho, Wo, generator=gen).to(dtype)
    ins = [None if t is None else t.double().requires_grad_(True) for t in (x, a, gm, ga)]
    ref = elsa_reference(*ins, K, d, s)
    live = [t for t in ins if t is not None]
    ref_grads = dict(zip([i for i, t in enumerate(ins) if t is not None],
                         torch.autograd.grad(ref, live, go.double())))
    out = emu.forward(x, a, gm, ga, K, d, s)
    errs = {'out': max_rel_err(out, ref)}
    assert out.dtype == dtype and out.shape == ref.shape
    grads = emu.backward(go, x, a, gm, ga, K, d, s, mask)
    grads2 = emu.backward(go, x, a, gm, ga, K, d, s, mask)
    for i, name in enumerate(('x', 'attn', 'ghost_mul', 'ghost_add')):
        wanted = mask[i] and ins[i] is not None
        if not wanted:
            assert grads[i].numel() == 0, name
            continue
        assert grads[i].dtype == dtype and grads[i].shape == ins[i].shape, name
        assert torch.equal(grads[i], grads2[i]), name + ' not deterministic'
        errs[name] = max_rel_err(grads[i], ref_grads[i])
    scale = {'ghost_mul': 2, 'ghost_add': 2}
    bad = {k: v for k, v in errs.items() if v > TOL[dtype] * scale.get(k, 1)}
    return errs, bad


def main():
    t0 = time.time()
    emu = build()
    print('built the emulated CUDA extension in %.0f s' % (time.time() - t0), flush=True)
    failures = 0
    n = 0
    variants = [((True, True), [True] * 4), ((False, True), [True, True, False, True]),
                ((True, False), [False, True, True, False]), ((False, False), [True] * 4)]
    for ci, case in enumerate(CASES):
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            ghosts, mask = variants[(ci + [torch.float64, torch.float32, torch.float16,
                                           torch.bfloat16].index(dtype)) % len(variants)]
            errs, bad = check(emu, case, dtype, ghosts, mask)
            n += 1
            failures += bool(bad)
            print('%-30s %-15s ghosts=%-13s %s %s' % (case, str(dtype)[6:], ghosts,
                                                      ' '.join('%s=%.1e' % kv
                                                               for kv in errs.items()),
                                                      'FAIL %s' % bad if bad else 'ok'),
                  flush=True)
    # empty batch: no launch may touch memory, ghost grads are zeros
    x = torch.randn(0, 4, 5, 6)
    a = torch.randn(0, 2, 9, 5, 6)
    g = torch.randn(4, 3, 3)
    assert emu.forward(x, a, g, g, 3, 1, 1).shape == (0, 4, 5, 6)
    gr = emu.backward(torch.randn(0, 4, 5, 6), x, a, g, g, 3, 1, 1, [True] * 4)
    assert gr[0].shape == x.shape and not gr[2].any() and not gr[3].any()
    print('%d checks, %d failed, %d emulated launches, %.0f s' %
          (n, failures, emu.launches(), time.time() - t0))
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
