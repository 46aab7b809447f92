"""Benchmark the native ELSA operator against the pure-PyTorch unfold reference.

For each case (Swin-T stage shapes, K = 7, ghost_add only as ELSA-Swin uses it), dtype and
direction (fwd, bwd, fwd+bwd) it reports the median time of the native kernel and of the
reference measured in the same run, the speed-up, and the peak memory each needs beyond its
inputs; on CUDA also the achieved bandwidth of the native kernel against a measured
device-to-device copy, on the CPU its achieved GFLOP/s against the machine's measured fp32
multiply-add rate (a 2048 x 2048 x 2048 matrix product on all threads, the best the CPU's FMA
units reach from PyTorch).

Work (for GFLOP/s): the multiply-adds ``get_flops.py`` counts for the operator (2 per (b, c,
output pixel, tap) with a ghost, :func:`mmelsa.ops.elsa_op_flops`) forward, twice that
backward (grad_x and grad_attn each repeat the forward's products), 2 FLOP per multiply-add.

Memory:
* CUDA: ``torch.cuda.max_memory_allocated()`` minus the memory allocated before the call.
* CPU: the growth of the process's peak resident set (VmHWM) during one call, after resetting the
  peak (``/proc/self/clear_refs``, Linux) and setting glibc's mmap threshold to 64 KiB, so every
  tensor buffer is its own mapping that is returned to the OS when freed: the figure is the
  memory that was actually touched at the peak of the call, allocator caching excluded.

Minimal bytes (for GB/s): fwd reads x, attn, ghost_add and writes out once; bwd reads
grad_out, x, attn, ghost_add and writes grad_x, grad_attn, grad_ghost_add once; fwd+bwd is both.

With ``--fused`` it compares instead the fused softmax + ELSA operator
(``elsa_attention(x, logits, ..., attn_is_logits=True)``) with what it replaces,
``elsa_attention(x, logits.softmax(2), ...)``, on the same logits: fwd (no autograd), bwd
(``torch.autograd.grad`` through a retained graph, the softmax backward included for the
unfused pair) and fwd+bwd. The two are timed alternately, call by call, in one process, so
that load changes on a shared machine hit both alike; the ratio is the figure to read.

With ``--compare-generic`` (CUDA) it times the tiled fast-path kernels against the generic
kernels they replace (the same build, switched with ``MMELSA_CUDA_NO_TILED=1`` between calls),
plain and fused op, per direction, and prints the largest relative difference between the two
results (forward output and every gradient; max |a - b| / max(1, max |b|), as the tests measure
it) and whether the tiled results are bitwise equal over two runs.

Examples:
    python tools/analysis_tools/benchmark_elsa_op.py --device cuda --compare-generic
    python tools/analysis_tools/benchmark_elsa_op.py --device cpu --fused --cases coco-s1
    python tools/analysis_tools/benchmark_elsa_op.py --device cpu --cases coco-s2 coco-s3
    python tools/analysis_tools/benchmark_elsa_op.py --device cpu --cases in1k-s1 --batch 8
    python tools/analysis_tools/benchmark_elsa_op.py --device cuda --dtypes float32 float16
"""
import argparse
import functools
import gc
import os
import sys

import torch

from mmelsa.cli import positive_int
from mmelsa.ops import elsa_attention, elsa_op_flops, info
from mmelsa.ops.reference import elsa_reference, max_rel_err
from mmelsa.utils.benchmark import CpuPeak, copy_bandwidth, cuda_peak, time_fn, time_interleaved

K = 7
# name: (B, C, H, W, G) -- Swin-T stages 1-3 at ImageNet 224 (batch 64) and COCO 800x1333 (batch 2)
CASES = {
    'in1k-s1': (64, 96, 56, 56, 3),
    'in1k-s2': (64, 192, 28, 28, 6),
    'in1k-s3': (64, 384, 14, 14, 12),
    'coco-s1': (2, 96, 200, 334, 3),
    'coco-s2': (2, 192, 100, 167, 6),
    'coco-s3': (2, 384, 50, 84, 12),
}
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16,
          'float64': torch.float64}
DIRECTIONS = ('fwd', 'bwd', 'fwd+bwd')
CHANNELS_LAST = False  # set by --channels-last


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    p.add_argument('--dtypes', nargs='+', choices=list(DTYPES), default=None,
                   help='default: float32 on cpu; float32 float16 bfloat16 on cuda')
    p.add_argument('--cases', nargs='+', choices=list(CASES), default=None,
                   help='default: all cases (cuda) or the COCO cases (cpu)')
    p.add_argument('--batch', type=positive_int, default=None,
                   help='override the batch of every case')
    p.add_argument('--reps', type=positive_int, default=None,
                   help='timed repetitions (median reported)')
    p.add_argument('--no-reference', action='store_true', help='time the native kernel only')
    p.add_argument('--fused', action='store_true',
                   help='compare the fused softmax + op with softmax then the op')
    p.add_argument('--compare-generic', action='store_true',
                   help='CUDA: the tiled fast-path kernels against the generic ones')
    p.add_argument('--channels-last', action='store_true',
                   help='x and grad_out channels_last, attn laid out (B, H, W, G, K*K), as the '
                   'ELSA module passes them (the CPU channels-last kernels)')
    p.add_argument('--quick', action='store_true',
                   help='few repetitions and, unless --cases is given, only coco-s3')
    return p.parse_args()


def cpu_fma_rate():
    """fp32 multiply-adds per second of a large matrix product on all threads (the CPU's
    achievable FMA rate from PyTorch: MKL / oneDNN sgemm)."""
    n = 2048
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    ms = time_fn(lambda: torch.mm(a, b), 'cpu', reps=5, warmup=2)
    return n**3 / (ms * 1e-3)


def multiply_adds(direction, x):
    """The operator's multiply-adds for one direction (see the module docstring)."""
    fwd = elsa_op_flops(tuple(x.shape), K)
    return {'fwd': fwd, 'bwd': 2 * fwd, 'fwd+bwd': 3 * fwd}[direction]


# ------------------------------------------------------------------------------ the work
def make_inputs(B, C, H, W, G, dtype, device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=gen).to(device, dtype)
    attn = torch.randn(B, G, K * K, H, W, generator=gen).softmax(2).to(device, dtype)
    ghost_add = (0.02 * torch.randn(C, K, K, generator=gen)).to(device, dtype)
    grad = torch.randn(B, C, H, W, generator=gen).to(device, dtype)
    if CHANNELS_LAST:
        x = x.contiguous(memory_format=torch.channels_last)
        grad = grad.contiguous(memory_format=torch.channels_last)
        attn = attn.permute(0, 3, 4, 1, 2).contiguous().permute(0, 3, 4, 1, 2)
    return x, attn, ghost_add, grad


def runners(impl, x, attn, ghost_add, grad):
    """fwd, bwd, fwd+bwd callables of one implementation (inputs x, attn, ghost_add)."""
    leaves = [t.detach().requires_grad_(True) for t in (x, attn, ghost_add)]

    def fwd():
        with torch.no_grad():
            return impl(x, attn, None, ghost_add, K)

    def fwd_bwd():
        out = impl(leaves[0], leaves[1], None, leaves[2], K)
        return torch.autograd.grad(out, leaves, grad)

    if impl is elsa_attention:
        def bwd():  # exactly what autograd calls
            return torch.ops.mmelsa.elsa_backward(grad, x, attn, None, ghost_add, K, 1, 1,
                                                  [True, True, False, True])
        bwd_setup = None
    else:
        state = {}

        def bwd_setup():
            state['out'] = impl(leaves[0], leaves[1], None, leaves[2], K)

        def bwd():
            return torch.autograd.grad(state['out'], leaves, grad, retain_graph=True)

    return {'fwd': (None, fwd), 'bwd': (bwd_setup, bwd), 'fwd+bwd': (None, fwd_bwd)}


def fused_runners(x, logits, ghost_add, grad):
    """fwd, bwd, fwd+bwd callables of (fused, softmax then op) on the same logits."""
    def fused(x_, l_, g_):
        return elsa_attention(x_, l_, None, g_, K, attn_is_logits=True)

    def unfused(x_, l_, g_):
        return elsa_attention(x_, l_.softmax(2), None, g_, K)

    out = {}
    for label, impl in (('fused', fused), ('softmax+op', unfused)):
        leaves = [t.detach().requires_grad_(True) for t in (x, logits, ghost_add)]
        state = {}

        def fwd(impl=impl):
            with torch.no_grad():
                return impl(x, logits, ghost_add)

        def bwd_setup(impl=impl, leaves=leaves, state=state):
            state['out'] = impl(*leaves)

        def bwd(leaves=leaves, state=state):
            return torch.autograd.grad(state['out'], leaves, grad, retain_graph=True)

        def fwd_bwd(impl=impl, leaves=leaves):
            return torch.autograd.grad(impl(*leaves), leaves, grad)

        out[label] = {'fwd': (None, fwd), 'bwd': (bwd_setup, bwd), 'fwd+bwd': (None, fwd_bwd)}
    return out


def case_inputs(args, cases, dtypes, dev):
    """(case, its shape as printed, dtype name, (x, attn, ghost_add, grad)) for every case and
    dtype, --batch overriding the case's batch."""
    for case in cases:
        B, C, H, W, G = CASES[case]
        B = args.batch or B
        for dt in dtypes:
            yield (case, '(%d,%d,%d,%d) %d' % (B, C, H, W, G), dt,
                   make_inputs(B, C, H, W, G, DTYPES[dt], dev))


def main_fused(args, dev, dtypes, cases, reps, warmup, peak):
    print('# fused softmax + ELSA vs softmax then ELSA; K=%d, ghost_add only, median of %d '
          'alternating runs; peak = memory beyond the inputs' % (K, reps))
    print()
    head = ['case', 'shape (B,C,H,W) G', 'dtype', 'dir', 'fused ms', 'softmax+op ms',
            'speed-up', 'fused peak MiB', 'softmax+op peak MiB']
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for case, shape, dt, (x, attn, ghost_add, grad) in case_inputs(args, cases, dtypes, dev):
        logits = attn.float().log().to(attn.dtype)  # logits whose softmax is attn
        del attn
        run = fused_runners(x, logits, ghost_add, grad)
        for direction in DIRECTIONS:
            fns, mems = [], []
            for label in ('fused', 'softmax+op'):
                setup, fn = run[label][direction]
                if setup:
                    setup()
                mems.append(peak(fn))
                fns.append(fn)
            if dev == 'cuda':
                ms = [time_fn(fn, dev, reps, warmup) for fn in fns]
            else:
                ms = time_interleaved(fns, reps, warmup, dev)
            cells = [case, shape, dt, direction,
                     '%.3f' % ms[0], '%.3f' % ms[1], '%.2fx' % (ms[1] / ms[0]),
                     '%.1f' % (mems[0] / 2**20), '%.1f' % (mems[1] / 2**20)]
            print('| ' + ' | '.join(cells) + ' |', flush=True)
        del run, x, logits, ghost_add, grad
        gc.collect()


def generic(fn):
    """``fn`` run with the CUDA launchers sent to the generic kernels."""
    def run():
        os.environ['MMELSA_CUDA_NO_TILED'] = '1'
        try:
            return fn()
        finally:
            del os.environ['MMELSA_CUDA_NO_TILED']
    return run


def max_rel_diff(a, b):
    """The largest :func:`max_rel_err` over the results ``a`` against ``b`` (a tensor or a
    tuple of them)."""
    a, b = (a,) if torch.is_tensor(a) else a, (b,) if torch.is_tensor(b) else b
    return max(max_rel_err(u, v) for u, v in zip(a, b))


def main_compare_generic(args, dev, dtypes, cases, reps, warmup):
    print('# tiled fast path vs generic CUDA kernels; K=%d, ghost_add only, median of %d runs; '
          'diff = largest relative difference of the results; repro = tiled fwd+bwd bitwise '
          'equal over two runs' % (K, reps))
    print()
    head = ['case', 'shape (B,C,H,W) G', 'dtype', 'op', 'dir', 'tiled ms', 'generic ms',
            'speed-up', 'diff', 'repro', 'tiled GB/s']
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    # called as impl(x, attn, None, ghost_add, K) by runners(); the fused op reads attn as logits
    ops = {'plain': elsa_attention,
           'fused': functools.partial(elsa_attention, attn_is_logits=True)}
    for case, shape, dt, (x, attn, ghost_add, grad) in case_inputs(args, cases, dtypes, dev):
        for op, impl in ops.items():
            run = runners(impl, x, attn, ghost_add, grad)
            fwd, fwd_bwd = run['fwd'][1], run['fwd+bwd'][1]
            diff = max(max_rel_diff(fwd(), generic(fwd)()),
                       max_rel_diff(fwd_bwd(), generic(fwd_bwd)()))
            repro = all(torch.equal(u, v) for u, v in zip(fwd_bwd(), fwd_bwd()))
            for direction in DIRECTIONS:
                setup, fn = run[direction]
                if setup:
                    setup()
                ms = [time_fn(f, dev, reps, warmup) for f in (fn, generic(fn))]
                gbs = minimal_bytes(direction, x, attn, ghost_add) / (ms[0] * 1e-3) / 1e9
                cells = [case, shape, dt, op, direction,
                         '%.3f' % ms[0], '%.3f' % ms[1], '%.2fx' % (ms[1] / ms[0]),
                         '%.1e' % diff, 'yes' if repro else 'NO', '%.0f' % gbs]
                print('| ' + ' | '.join(cells) + ' |', flush=True)
            del run
        del x, attn, ghost_add, grad
        gc.collect()
        torch.cuda.empty_cache()


def minimal_bytes(direction, x, attn, ghost_add):
    e = x.element_size()
    xs, a, g = x.numel() * e, attn.numel() * e, ghost_add.numel() * e
    fwd = xs + a + g + xs  # out has the numel of x at stride 1
    bwd = (xs + xs + a + g) + (xs + a + g)
    return {'fwd': fwd, 'bwd': bwd, 'fwd+bwd': fwd + bwd}[direction]


def main():
    args = parse_args()
    global CHANNELS_LAST
    CHANNELS_LAST = args.channels_last
    dev = args.device
    if args.compare_generic and dev != 'cuda':
        sys.exit('--compare-generic: the tiled kernels are CUDA kernels; use --device cuda')
    if dev == 'cuda' and not torch.cuda.is_available():
        sys.exit('--device cuda: no GPU visible')
    if not info()['ext_loaded']:
        sys.exit('mmelsa._ext is not built')
    dtypes = args.dtypes or (['float32'] if dev == 'cpu' else ['float32', 'float16', 'bfloat16'])
    cases = args.cases or (['coco-s3'] if args.quick else
                           (['coco-s2', 'coco-s3'] if dev == 'cpu' else list(CASES)))
    reps = args.reps or (3 if args.quick else (5 if dev == 'cpu' else 20))
    warmup = 1 if (args.quick or dev == 'cpu') else 5
    cpu_peak = CpuPeak() if dev == 'cpu' else None
    peak = (lambda fn: cpu_peak.measure(fn)) if dev == 'cpu' else cuda_peak

    if dev == 'cuda':
        name = torch.cuda.get_device_name()
        bw = copy_bandwidth(dev)
        print('# device: %s, torch %s, CUDA %s, D2D copy %.0f GB/s' %
              (name, torch.__version__, torch.version.cuda, bw))
    else:
        bw = None
        fma = cpu_fma_rate()
        print('# device: cpu (%d threads), torch %s, fp32 sgemm %.1f GFLOP/s' %
              (torch.get_num_threads(), torch.__version__, 2 * fma / 1e9))
    print('# command: python %s' % ' '.join(sys.argv))
    if args.compare_generic:
        return main_compare_generic(args, dev, dtypes, cases, reps, warmup)
    if args.fused:
        return main_fused(args, dev, dtypes, cases, reps, warmup, peak)
    print('# K=%d, ghost_add only, median of %d runs; peak = memory beyond the inputs' %
          (K, reps))
    print()
    head = ['case', 'shape (B,C,H,W) G', 'dtype', 'dir', 'native ms', 'ref ms', 'speed-up',
            'native peak MiB', 'ref peak MiB']
    if dev == 'cuda':
        head += ['native GB/s', '% of copy']
    else:
        head += ['native GFLOP/s', '% of sgemm']
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for case, shape, dt, (x, attn, ghost_add, grad) in case_inputs(args, cases, dtypes, dev):
        nat = runners(elsa_attention, x, attn, ghost_add, grad)
        ref = None if args.no_reference else runners(elsa_reference, x, attn, ghost_add,
                                                     grad)
        for direction in DIRECTIONS:
            row = {}
            for label, impl in (('native', nat), ('ref', ref)):
                if impl is None:
                    row[label] = (float('nan'), float('nan'))
                    continue
                setup, fn = impl[direction]
                if setup:
                    setup()
                try:
                    mem = peak(fn)
                    ms = time_fn(fn, dev, reps, warmup)
                except torch.cuda.OutOfMemoryError if dev == 'cuda' else MemoryError:
                    ms, mem = float('nan'), float('nan')
                row[label] = (ms, mem)
            (nms, nmem), (rms, rmem) = row['native'], row['ref']
            cells = [case, shape, dt, direction,
                     '%.3f' % nms, '%.3f' % rms, '%.1fx' % (rms / nms),
                     '%.1f' % (nmem / 2**20), '%.1f' % (rmem / 2**20)]
            if dev == 'cuda':
                gbs = minimal_bytes(direction, x, attn, ghost_add) / (nms * 1e-3) / 1e9
                cells += ['%.0f' % gbs, '%.0f%%' % (100 * gbs / bw)]
            else:
                rate = multiply_adds(direction, x) / (nms * 1e-3)
                cells += ['%.1f' % (2 * rate / 1e9), '%.0f%%' % (100 * rate / fma)]
            print('| ' + ' | '.join(cells) + ' |', flush=True)
        del nat, ref, x, attn, ghost_add, grad
        gc.collect()
        if dev == 'cuda':
            torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
