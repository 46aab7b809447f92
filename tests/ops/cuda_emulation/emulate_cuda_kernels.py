"""Check the CUDA kernels and launchers of the ELSA operators without a GPU.

Compiles csrc/pytorch/cuda/elsa_cuda.cu and csrc/common/cuda/elsa_kernel.cuh as host C++ over a
small SIMT emulator (tests/ops/cuda_emulation/cuda_shim.h: every CUDA thread a fiber, real block
barriers and warp shuffles), runs the plain operator (forward, backward) and the fused softmax +
ELSA operator (forward, backward) for every dtype, the specialised and the generic kernel sizes,
dilation, stride, ghost variants (absent, shared by the batch, one per sample as DDF's channel
filter, mixed), gradient masks and both input layouts (NCHW, and the channels-last maps
ELSAAttention passes), and compares each result with the float64 unfold
reference and each output's layout with the promised one. It proves the index math, the launch
geometry, the barriers and the reductions; it cannot prove anything about timing, the memory
model or the real compiler (use dev/gpu/cuda_checks.sh on a GPU for that).
tests/ops/test_cuda_emulation.py runs it in CI.

The build compiles a copy of the tree's csrc/ in which the places of the planted bugs
(plants.py) are run-time switches, all off unless --planted-bug chooses one; --no-plants
compiles the sources as they are (for a tree whose kernels the plants no longer match).

    python tests/ops/cuda_emulation/emulate_cuda_kernels.py            # the quick set
    python tests/ops/cuda_emulation/emulate_cuda_kernels.py --full     # the CI set: more, larger
    python tests/ops/cuda_emulation/emulate_cuda_kernels.py --no-plants --src DIR  # other kernels

Exit status 0 when every check passes, 1 when one fails (each failure is printed).
"""
import argparse
import os
import os.path as osp
import sys
import time

import torch
from torch.utils.cpp_extension import load

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))
HERE = osp.dirname(osp.abspath(__file__))
if ROOT not in sys.path:  # run as a script from anywhere: the reference comes from this tree
    sys.path.insert(0, ROOT)

from mmelsa.ops.reference import elsa_reference, max_rel_err  # noqa: E402

if __package__:
    from . import plants
else:  # run as a script: this folder is sys.path[0] (another package may own the name tests)
    import plants

CL = torch.channels_last
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 2.5e-2}
# (B, C, G, H, W, K, dilation, stride). K = 7 with stride 1 and dilation 1 runs the tiled fast
# path; K = 3, 5, 7 otherwise the compile-time-K kernels, the others the generic ones. Small on
# purpose: an emulated launch costs microseconds per thread.
CASES = [
    (2, 4, 2, 9, 11, 3, 1, 1),
    (1, 3, 3, 6, 7, 1, 1, 1),
    (1, 4, 2, 8, 7, 5, 1, 1),
    (2, 4, 2, 10, 9, 7, 1, 1),
    (1, 2, 1, 9, 10, 9, 1, 1),
    (2, 4, 4, 3, 4, 7, 1, 1),  # map smaller than the kernel
    (1, 4, 2, 13, 12, 7, 2, 1),
    (1, 3, 1, 14, 13, 3, 1, 2),
    (2, 4, 2, 16, 17, 5, 2, 3),
]
FULL_CASES = CASES + [
    (1, 2, 2, 6, 13, 11, 1, 1),
    (1, 2, 1, 17, 15, 15, 1, 1),
    (1, 2, 1, 16, 15, 9, 3, 2),
    (2, 6, 3, 33, 37, 7, 1, 1),  # more than one block of threads per plane
    # the tiled fast path (K = 7, stride 1, dilation 1): whole tiles only, one head; a map
    # lower than a tile and wider than one
    (1, 4, 1, 16, 64, 7, 1, 1),
    (1, 2, 2, 5, 40, 7, 1, 1),
]
# (ghost_mul, ghost_add) and the gradient mask, rotated over the cases and dtypes so that each
# combination meets every dtype. A ghost is False (absent), True (shared by the batch,
# (C, K, K)) or 'sample' (one per sample, (B, C, K, K)).
VARIANTS = [((True, True), [True] * 4), ((False, True), [True, True, False, True]),
            ((True, False), [False, True, True, False]), ((False, False), [True] * 4),
            ((True, True), [True, False, False, False])]
# Per-sample ghosts, each kind in every case, plain and fused, forward and backward: DDF's
# (a per-sample ghost_mul alone; a per-sample ghost_add alone), and per-sample with shared. On
# cases of B > 1 (one sample cannot tell the kinds apart): DDF-ResNet's K = 3 with stride 2 and
# 1 (the specialised generic kernels), a generic K, and the tiled fast path.
SAMPLE_GHOSTS = [('sample', False), (False, 'sample'), (True, 'sample'), ('sample', True),
                 ('sample', 'sample')]
SAMPLE_MASKS = [[True] * 4, [False, False, True, True], [True, True, False, True]]
SAMPLE_CASES = [
    (3, 4, 2, 9, 8, 3, 1, 2),
    (2, 6, 3, 7, 9, 3, 1, 1),
    (2, 2, 1, 6, 7, 9, 2, 1),
    (3, 4, 2, 10, 9, 7, 1, 1),
]


def build(src_root=ROOT, build_dir=None, name='elsa_cuda_emulated', verbose=False,
          planted=True):
    """Compile the emulated kernels of the tree ``src_root``; registers torch.ops.mmelsa_emu.

    planted: compile a copy of its csrc/ with the planted bugs' switches (plants.py), written
    under ``build_dir`` (default: build/cuda_emulation/NAME in this checkout); else its csrc/
    as it is. Raises plants.PlantError when a planted bug's place is not found.
    """
    if planted and not build_dir:
        build_dir = osp.join(ROOT, 'build', 'cuda_emulation', name)
    if build_dir:
        os.makedirs(build_dir, exist_ok=True)
    csrc = (plants.plant_tree(src_root, osp.join(build_dir, 'src')) if planted else
            osp.join(src_root, 'csrc'))
    # the emulation's own sources, with the kernels of src_root
    # -O1: the checks run for seconds, so a longer -O2 compile would not pay for itself
    load(name=name, sources=[osp.join(HERE, 'elsa_emulated.cpp')],
         extra_include_paths=[csrc, osp.join(csrc, 'common'), osp.join(csrc, 'common', 'cuda'),
                              HERE],
         extra_cflags=['-O1'], build_directory=build_dir, is_python_module=False,
         verbose=verbose)
    return torch.ops.mmelsa_emu


def _inputs(case, dtype, ghosts, seed, nhwc=False):
    """ghosts: each False (absent), True (shared, (C, K, K)) or 'sample' ((B, C, K, K)).
    nhwc: the layouts ELSAAttention passes: x a channel slice of a wider channels_last map,
    the attention pixel-major (B, Ho, Wo, G, K*K), grad_out channels_last."""
    B, C, G, H, W, K, d, s = case
    gen = torch.Generator().manual_seed(seed)
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    x = torch.randn(B, C, H, W, generator=gen).to(dtype)
    a = (3 * torch.randn(B, G, K * K, Ho, Wo, generator=gen)).to(dtype)
    gm, ga = (None if not kind else torch.randn(
        (B, C, K, K) if kind == 'sample' else (C, K, K), generator=gen).to(dtype)
        for kind in ghosts)
    go = torch.randn(B, C, Ho, Wo, generator=gen).to(dtype)
    if nhwc:
        wide = torch.zeros(B, C + 3, H, W, dtype=dtype).contiguous(memory_format=CL)
        wide[:, 1:C + 1] = x
        x = wide[:, 1:C + 1]
        a = a.permute(0, 3, 4, 1, 2).contiguous().permute(0, 3, 4, 1, 2)
        go = go.contiguous(memory_format=CL)
    return x, a, gm, ga, go


def channels_last_out(case, nhwc):
    """The CUDA rule (elsa_cuda_nhwc): channels-last outputs for channels-last inputs in the
    tiled configuration (K = 7, stride 1, dilation 1)."""
    return nhwc and case[5:] == (7, 1, 1)


def layout_error(name, t, pixel_major):
    """None if t is laid out as promised, else what is wrong."""
    if name == 'attn':
        ok = t.permute(0, 3, 4, 1, 2).is_contiguous() if pixel_major else t.is_contiguous()
    else:
        ok = t.is_contiguous(memory_format=CL) if pixel_major else t.is_contiguous()
    return None if ok else 'layout: strides %s' % (t.stride(), )


def check(emu, case, dtype, ghosts, mask, fused, seed=0, nhwc=False):
    """One forward + backward of the emulated kernels against the float64 reference, and the
    layouts of the results. Returns ({name: max_rel_err}, {name: error over tolerance})."""
    K, d, s = case[5:]
    x, a, gm, ga, go = _inputs(case, dtype, ghosts, seed, nhwc)
    cl_out = channels_last_out(case, nhwc)
    ins = [None if t is None else t.double().requires_grad_(True) for t in (x, a, gm, ga)]
    attn = ins[1].softmax(2) if fused else ins[1]
    ref = elsa_reference(ins[0], attn, ins[2], ins[3], K, d, s)
    live = [i for i, t in enumerate(ins) if t is not None]
    ref_grads = dict(zip(live, torch.autograd.grad(ref, [ins[i] for i in live], go.double())))
    fwd = emu.softmax_forward if fused else emu.forward
    bwd = emu.softmax_backward if fused else emu.backward
    out = fwd(x, a, gm, ga, K, d, s)
    if out.dtype != dtype or out.shape != ref.shape:
        return {}, {'out': 'dtype %s shape %s' % (out.dtype, tuple(out.shape))}
    errs = {'out': max_rel_err(out, ref)}
    grads = bwd(go, x, a, gm, ga, K, d, s, mask)
    grads2 = bwd(go, x, a, gm, ga, K, d, s, mask)
    bad = {}
    if layout_error('out', out, cl_out):
        bad['out'] = layout_error('out', out, cl_out)
    for i, name in enumerate(('x', 'attn', 'ghost_mul', 'ghost_add')):
        if not (mask[i] and ins[i] is not None):
            if grads[i].numel() != 0:
                bad[name] = 'computed though not asked for'
            continue
        if grads[i].dtype != dtype or grads[i].shape != ins[i].shape:
            bad[name] = 'dtype %s shape %s' % (grads[i].dtype, tuple(grads[i].shape))
            continue
        if not torch.equal(grads[i], grads2[i]):
            bad[name] = 'not deterministic'
        if name in ('x', 'attn') and layout_error(name, grads[i], cl_out):
            bad[name] = layout_error(name, grads[i], cl_out)
        errs[name] = max_rel_err(grads[i], ref_grads[i])
    # ghost gradients sum over every position: their rounding grows with the count
    scale = {'ghost_mul': 2, 'ghost_add': 2}
    bad.update({k: v for k, v in errs.items() if v > TOL[dtype] * scale.get(k, 1)})
    return errs, bad


def check_empty(emu):
    """An empty batch: no launch may touch memory, ghost gradients are zeros. No channels
    (C = 0) on the tiled path: no empty grid (the emulator, like a GPU, refuses one), the
    attention gradient zeros."""
    x, a, g = torch.randn(0, 4, 5, 6), torch.randn(0, 2, 9, 5, 6), torch.randn(4, 3, 3)
    x0, a0, g0 = torch.randn(1, 0, 5, 6), torch.randn(1, 1, 49, 5, 6), torch.randn(0, 7, 7)
    gs = torch.randn(0, 4, 3, 3)  # per sample, of no sample
    for fwd, bwd in ((emu.forward, emu.backward), (emu.softmax_forward, emu.softmax_backward)):
        if fwd(x, a, g, g, 3, 1, 1).shape != (0, 4, 5, 6):
            return False
        gr = bwd(torch.randn(0, 4, 5, 6), x, a, g, g, 3, 1, 1, [True] * 4)
        if gr[0].shape != x.shape or gr[2].any() or gr[3].any():
            return False
        if fwd(x, a, gs, g, 3, 1, 1).shape != (0, 4, 5, 6):
            return False
        gr = bwd(torch.randn(0, 4, 5, 6), x, a, gs, g, 3, 1, 1, [True] * 4)
        if gr[2].shape != gs.shape or gr[3].shape != g.shape or gr[3].any():
            return False
        if fwd(x0, a0, g0, g0, 7, 1, 1).shape != (1, 0, 5, 6):
            return False
        gr = bwd(torch.randn(1, 0, 5, 6), x0, a0, g0, g0, 7, 1, 1, [True] * 4)
        if gr[1].shape != a0.shape or gr[1].any() or gr[2].shape != (0, 7, 7):
            return False
    return True


def _log_check(log, case, dtype, fused, nhwc, ghosts, errs, bad):
    log('%-28s %-8s %-5s %s ghosts=%-21s %s %s' % (
        case, str(dtype)[6:], 'fused' if fused else 'plain', 'nhwc' if nhwc else 'nchw',
        ghosts, ' '.join('%s=%.1e' % kv for kv in errs.items()), 'FAIL %s' % bad if bad else 'ok'))


def run_checks(emu, cases=CASES, log=print, stop_at_first=False):
    """Every case x dtype x (plain, fused); returns the number of failed checks."""
    failures = n = 0
    for ci, case in enumerate(cases):
        for di, dtype in enumerate(DTYPES):
            for fused in (False, True):
                ghosts, mask = VARIANTS[(ci + di + fused) % len(VARIANTS)]
                nhwc = (ci + di + fused) % 2 == 1  # every dtype and op meets both layouts
                errs, bad = check(emu, case, dtype, ghosts, mask, fused, seed=ci, nhwc=nhwc)
                n += 1
                failures += bool(bad)
                _log_check(log, case, dtype, fused, nhwc, ghosts, errs, bad)
                if bad and stop_at_first:
                    return failures, n
    if not check_empty(emu):
        log('empty batch: FAIL')
        failures += 1
    return failures, n + 1


def run_sample_checks(emu, cases=SAMPLE_CASES, log=print, stop_at_first=False):
    """Every case x per-sample ghost kind (SAMPLE_GHOSTS) x (plain, fused), the dtype, the
    gradient mask and the layout rotated; returns (failed checks, checks)."""
    failures = n = 0
    for ci, case in enumerate(cases):
        for gi, ghosts in enumerate(SAMPLE_GHOSTS):
            for fused in (False, True):
                k = ci + gi + fused
                dtype = DTYPES[k % len(DTYPES)]
                mask = SAMPLE_MASKS[k % len(SAMPLE_MASKS)]
                nhwc = (gi + fused) % 2 == 1  # each kind meets both layouts
                errs, bad = check(emu, case, dtype, ghosts, mask, fused, seed=ci, nhwc=nhwc)
                n += 1
                failures += bool(bad)
                _log_check(log, case, dtype, fused, nhwc, ghosts, errs, bad)
                if bad and stop_at_first:
                    return failures, n
    return failures, n


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--full', action='store_true', help='more and larger cases')
    p.add_argument('--src', default=ROOT, help='source tree whose csrc/ is emulated')
    p.add_argument('--build-dir', default=None, help='where to build (default: torch cache)')
    p.add_argument('--name', default='elsa_cuda_emulated', help='extension name')
    p.add_argument('--planted-bug', type=int, default=0,
                   help='switch on planted bug N of plants.py (tests)')
    p.add_argument('--no-plants', action='store_true',
                   help="compile the kernels as they are, without the planted bugs' switches")
    p.add_argument('--stop-at-first', action='store_true', help='stop at the first failure')
    p.add_argument('--max-cases', type=int, default=None, help='only the first N cases')
    p.add_argument('--build-only', action='store_true', help='build, run nothing')
    args = p.parse_args()
    if args.planted_bug and (args.no_plants or args.planted_bug not in plants.PLANTS):
        p.error('--planted-bug: no planted bug %d in this build' % args.planted_bug)
    t0 = time.time()
    emu = build(osp.abspath(args.src), args.build_dir, args.name, planted=not args.no_plants)
    print('built the emulated CUDA extension in %.0f s' % (time.time() - t0), flush=True)
    if args.build_only:
        return
    emu.set_planted_bug(args.planted_bug)
    t1 = time.time()
    cases = FULL_CASES if args.full else CASES
    log = lambda m: print(m, flush=True)  # noqa: E731
    failures, n = run_checks(emu, cases[:args.max_cases], log=log,
                             stop_at_first=args.stop_at_first)
    if not (failures and args.stop_at_first):
        f, k = run_sample_checks(emu, SAMPLE_CASES[:args.max_cases], log=log,
                                 stop_at_first=args.stop_at_first)
        failures, n = failures + f, n + k
    print('%d checks, %d failed, %d emulated launches, %.0f s of checks' %
          (n, failures, emu.launches(), time.time() - t1))
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
