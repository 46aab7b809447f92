"""Self-check of the ELSA operators on this machine: ``python -m mmelsa.ops.check``.

Run it after installing mmelsa, above all on a CUDA machine: in well under a minute it checks
the native operators that this installation will use against the float64 CPU reference
(:func:`mmelsa.ops.reference.elsa_reference`, a plain ``F.unfold`` formula independent of the
kernels) and prints a table of the worst errors and a one-line verdict (the last line; the exit
status is 0 for PASS, 1 for FAIL). It checks correctness only: the operator's speed is measured
by tools/analysis_tools/benchmark_elsa_op.py.

What is checked, on the CPU and, when torch sees a CUDA device, on CUDA:

* the plain operator and the fused softmax one (``attn_is_logits=True``);
* every floating dtype: float64, float32, float16, bfloat16;
* the configuration of the tiled CUDA kernels (kernel_size 7, dilation 1, stride 1) and generic
  ones (other kernel sizes, dilations, strides); on CUDA the tiled configuration once more with
  the tiled kernels switched off (``MMELSA_CUDA_NO_TILED=1``), so both kernel families are seen;
* NCHW inputs and channels-last ones (x a channel slice of a channels_last map, attn laid out
  (B, Ho, Wo, G, K*K), as the ELSA module passes them);
* ghosts shared by the batch (C, K, K), as ELSA's, and per sample (B, C, K, K), as DDF's
  channel filters (:func:`mmelsa.ops.ddf`);
* forward and backward (the gradients of x, attn and both ghost heads), each against the
  reference evaluated in float64 on the CPU from the same rounded inputs;
* bitwise reruns: the same forward and backward run twice give identical bits (the kernels use
  no atomics);
* on CUDA, a Swin-T stage-1 sized problem (fp32) against the CPU kernels in float64.

Without a CUDA device only the CPU part runs (a few seconds), and the verdict says that the
CUDA part was not run. ``--require-cuda`` turns that case into a failure.
"""
import argparse
import contextlib
import os
import sys
import time
from typing import List, Optional

import torch

from .functional import elsa_attention
from .extension import info
from .reference import elsa_reference, max_rel_err

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
SHORT = {torch.float64: 'fp64', torch.float32: 'fp32', torch.float16: 'fp16',
         torch.bfloat16: 'bf16'}
# Largest max_rel_err (max |a - e| / max(1, max |e|)) accepted, per dtype: rounding of the
# inputs and outputs to the dtype, accumulation in fp32 (float64 for float64).
FWD_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
GRAD_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 4e-3,
            torch.bfloat16: 2e-2}
# ghost gradients sum over the batch and every output pixel: more rounding, a wider bound
GHOST_SCALE = 4
# name -> (B, C, G, H, W, K, dilation, stride); sizes that are not multiples of any tile
CONFIGS = {
    'K7 (tiled)': (2, 24, 3, 19, 23, 7, 1, 1),
    'K3 d2': (2, 12, 3, 15, 17, 3, 2, 1),
    'K5 s2': (1, 16, 4, 18, 13, 5, 1, 2),
    'K7 s2': (2, 8, 2, 17, 16, 7, 1, 2),
    # per-sample ghosts (B, C, K, K), DDF's channel filters: DDF-ResNet's K3 stride 2 and the
    # tiled configuration
    'DDF K3 s2': (2, 16, 2, 13, 11, 3, 1, 2),
    'DDF K7 (tiled)': (2, 24, 3, 19, 23, 7, 1, 1),
}
#: configurations whose ghosts are per sample
PER_SAMPLE = ('DDF K3 s2', 'DDF K7 (tiled)')
#: configurations of the tiled CUDA kernels, checked with them switched off too
TILED = ('K7 (tiled)', 'DDF K7 (tiled)')
NO_TILED_ENV = 'MMELSA_CUDA_NO_TILED'  # read by the CUDA launchers on every call


class Result:
    """One check: what it compared and whether it held."""

    def __init__(self, device, config, layout, op, dtype, what, ok, detail=''):
        self.device, self.config, self.layout, self.op = device, config, layout, op
        self.dtype, self.what, self.ok, self.detail = dtype, what, ok, detail

    def name(self):
        parts = [self.device, self.config, self.layout, self.op]
        if self.dtype is not None:
            parts.append(SHORT[self.dtype])
        return ' '.join(parts + [self.what])


@contextlib.contextmanager
def _tiled_off(off):
    """Send the CUDA launchers to the generic kernels while active (when ``off``)."""
    if not off:
        yield
        return
    old = os.environ.get(NO_TILED_ENV)
    os.environ[NO_TILED_ENV] = '1'
    try:
        yield
    finally:
        if old is None:
            del os.environ[NO_TILED_ENV]
        else:
            os.environ[NO_TILED_ENV] = old


def _inputs(config, layout, fused, dtype, device, seed=0, per_sample=False):
    """(x, attn, ghost_mul, ghost_add) as leaves on ``device`` in ``dtype``, the ghosts
    (B, C, K, K) when ``per_sample``, else (C, K, K). The values are
    drawn in float64 on the CPU and rounded to ``dtype`` there, so they are the same whatever
    the device and layout (one reference serves them all); the layouts are made on ``device``
    (moving a strided tensor with ``.to()`` would make it dense)."""
    B, C, G, H, W, K, d, s = config
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    scale = 3.0 if fused else 1.0  # logits of a few units: peaked softmaxes
    x, attn = rand(B, C, H, W), rand(B, G, K * K, Ho, Wo, scale=scale)
    ghost = (B, C, K, K) if per_sample else (C, K, K)
    gm, ga = rand(*ghost), rand(*ghost)
    x, attn, gm, ga = (t.to(device) for t in (x, attn, gm, ga))
    if layout == 'channels-last':  # a channel slice of a wider channels_last map, as the ELSA
        # module's value projection; attn laid out (B, Ho, Wo, G, K*K), as a 1x1 conv's output
        wide = x.new_zeros(B, C + 3, H, W).contiguous(memory_format=torch.channels_last)
        wide[:, 3:] = x
        x = wide[:, 3:]
        attn = attn.permute(0, 3, 4, 1, 2).contiguous().permute(0, 3, 4, 1, 2)
        assert x.stride(1) == 1 and attn.stride(2) == 1
    return tuple(t.detach().requires_grad_(True) for t in (x, attn, gm, ga))


def _run(inputs, grad, K, d, s, fused):
    """Forward and backward of the operator: (out, grad_x, grad_attn, grad_mul, grad_add)."""
    out = elsa_attention(*inputs, K, d, s, attn_is_logits=fused)
    grads = torch.autograd.grad(out, inputs, grad)
    return (out.detach(), ) + tuple(grads)


def _reference(inputs, grad, K, d, s, fused):
    """The same in float64 on the CPU through the unfold reference."""
    ref_in = tuple(t.detach().to('cpu', torch.float64).requires_grad_(True) for t in inputs)
    x, attn, gm, ga = ref_in
    probs = attn.softmax(2) if fused else attn
    out = elsa_reference(x, probs, gm, ga, K, d, s)
    grads = torch.autograd.grad(out, ref_in, grad.to('cpu', torch.float64))
    return (out.detach(), ) + tuple(grads)


def _same_bits(a, b):
    return all(torch.equal(u, v) for u, v in zip(a, b))


def check_case(device, name, layout, fused, dtype, generic=False, cache=None) -> List[Result]:
    """Forward, gradients and a bitwise rerun of one case; one Result per comparison.
    ``cache`` (a dict) keeps the float64 reference between cases with the same values (the
    layouts and devices of one config, op and dtype)."""
    K, d, s = CONFIGS[name][5:]
    config_name = name + (' generic' if generic else '')
    op = 'fused' if fused else 'plain'
    inputs = _inputs(CONFIGS[name], layout, fused, dtype, device,
                     per_sample=name in PER_SAMPLE)
    gen = torch.Generator().manual_seed(1)
    B, C, G, H, W = CONFIGS[name][:5]
    shape = (B, C, (H - 1) // s + 1, (W - 1) // s + 1)
    grad = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)

    def result(what, ok, detail=''):
        return Result(device, config_name, layout, op, dtype, what, ok, detail)

    try:
        with _tiled_off(generic):
            got = _run(inputs, grad, K, d, s, fused)
            again = _run(inputs, grad, K, d, s, fused)
    except Exception as e:  # a kernel that raises is a failed check, not a crash of the check
        return [result('run', False, '%s: %s' % (type(e).__name__, str(e).splitlines()[0]))]
    key = (name, fused, dtype)
    ref = cache.get(key) if cache is not None else None
    if ref is None:
        ref = _reference(inputs, grad, K, d, s, fused)
        if cache is not None:
            cache[key] = ref
    results = []
    for what, g, r in zip(('out', 'grad x', 'grad attn', 'grad ghost_mul', 'grad ghost_add'),
                          got, ref):
        if what == 'out':
            tol = FWD_TOL[dtype]
        else:
            tol = GRAD_TOL[dtype] * (GHOST_SCALE if 'ghost' in what and dtype != torch.float64
                                     else 1)
        if g.dtype != dtype or g.device.type != device or g.shape != r.shape:
            results.append(result(what, False, 'got %s %s on %s' % (g.dtype, tuple(g.shape),
                                                                    g.device)))
            continue
        err = max_rel_err(g, r)
        results.append(result(what, err <= tol, 'error %.1e, tolerance %.0e' % (err, tol)))
        results[-1].ratio = err / tol
    results.append(result('bitwise rerun', _same_bits(got, again),
                          'two runs differ' if not _same_bits(got, again) else ''))
    return results


def check_large_cuda() -> List[Result]:
    """A Swin-T stage-1 sized problem (K = 7, fp32) on CUDA against the CPU kernels in float64
    (which the cases above check against the reference): tiles and grids at a real size."""
    B, C, G, H, W, K = 2, 96, 3, 56, 57, 7
    results = []
    for fused in (False, True):
        op = 'fused' if fused else 'plain'
        cfg = (B, C, G, H, W, K, 1, 1)
        inputs = _inputs(cfg, 'NCHW', fused, torch.float32, 'cuda', seed=2)
        grad = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(3),
                           dtype=torch.float64)
        try:
            got = _run(inputs, grad.to('cuda', torch.float32), K, 1, 1, fused)
        except Exception as e:
            results.append(Result('cuda', 'stage-1 size', 'NCHW', op, torch.float32, 'run',
                                  False, '%s: %s' % (type(e).__name__, str(e).splitlines()[0])))
            continue
        ref_in = tuple(t.detach().to('cpu', torch.float64).requires_grad_(True) for t in inputs)
        ref = _run(ref_in, grad, K, 1, 1, fused)
        for what, g, r in zip(('out', 'grad x', 'grad attn', 'grad ghost_mul', 'grad ghost_add'),
                              got, ref):
            tol = (FWD_TOL if what == 'out' else GRAD_TOL)[torch.float32]
            tol *= GHOST_SCALE if 'ghost' in what else 1
            err = max_rel_err(g, r)
            results.append(Result('cuda', 'stage-1 size', 'NCHW', op, torch.float32, what,
                                  err <= tol, 'error %.1e, tolerance %.0e' % (err, tol)))
    return results


def check_device(device, cache=None) -> List[Result]:
    """Every case on ``device``; ``cache`` shares the references across calls."""
    cache = {} if cache is None else cache
    results = []
    for name in CONFIGS:
        for layout in ('NCHW', 'channels-last'):
            for fused in (False, True):
                for dtype in DTYPES:
                    results += check_case(device, name, layout, fused, dtype, cache=cache)
                    if device == 'cuda' and name in TILED:
                        results += check_case(device, name, layout, fused, dtype,
                                              generic=True, cache=cache)
    if device == 'cuda':
        results += check_large_cuda()
    return results


# ----------------------------------------------------------------------------- report
def summary_rows(results: List[Result]) -> List[str]:
    """One row per (device, config, layout, op): per dtype the worst error / tolerance over
    the forward and the gradients, and whether the rerun was bitwise identical."""
    keys = []
    cells = {}
    for r in results:
        key = (r.device, r.config, r.layout, r.op)
        if key not in cells:
            keys.append(key)
            cells[key] = {}
        entry = cells[key].setdefault(r.dtype, [0.0, True, True])
        entry[0] = max(entry[0], getattr(r, 'ratio', 0.0))
        if r.what == 'bitwise rerun':
            entry[2] = entry[2] and r.ok
        entry[1] = entry[1] and r.ok
    dtypes = [dt for dt in DTYPES if any(dt in c for c in cells.values())]
    rows = ['| device | config | layout | op | ' + ' | '.join(SHORT[dt] for dt in dtypes) +
            ' |', '|---|---|---|---|' + '---|' * len(dtypes)]
    for key in keys:
        row = list(key)
        for dt in dtypes:
            if dt not in cells[key]:
                row.append('')
                continue
            worst, ok, bitwise = cells[key][dt]
            row.append('%.2f%s%s' % (worst, '' if bitwise else ' not bitwise',
                                     '' if ok else ' FAIL'))
        rows.append('| ' + ' | '.join(row) + ' |')
    return rows


def _cuda_state():
    """(run the CUDA part?, why not), from torch and the extension."""
    if not torch.cuda.is_available():
        return False, 'torch sees no CUDA device'
    if not info()['with_cuda']:
        return False, ('a CUDA device is visible but mmelsa._ext was built without its CUDA '
                       'kernels (rebuild it with FORCE_CUDA=1)')
    return True, ''


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog='python -m mmelsa.ops.check',
        description='Check the ELSA operators of this installation against the float64 CPU '
        'reference (plain and fused, every dtype, tiled and generic configurations, NCHW and '
        'channels-last, forward and backward, bitwise reruns). The last line is the verdict; '
        'the exit status is 0 for PASS, 1 for FAIL. Speed: '
        'tools/analysis_tools/benchmark_elsa_op.py.')
    p.add_argument('--device', choices=('all', 'cpu', 'cuda'), default='all',
                   help='all (default): the CPU, and CUDA when torch sees a device')
    p.add_argument('--require-cuda', action='store_true',
                   help='fail when the CUDA part cannot run (no device, or an extension built '
                   'without CUDA kernels)')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    i = info()
    print('mmelsa.ops.check: torch %s (CUDA %s), extension %s' % (
        torch.__version__, torch.version.cuda,
        ('loaded, CUDA kernels %s' % ('yes (CUDA %s)' % i['cuda_version'] if i['with_cuda']
                                      else 'no')) if i['ext_loaded'] else 'NOT loaded'))
    if not i['ext_loaded']:
        print('FAIL: mmelsa._ext could not be imported, so no ELSA operator is available: '
              'build it (pip install -e . --no-build-isolation, or python setup.py build_ext '
              '--inplace)')
        return 1
    run_cuda, why_not = _cuda_state()
    devices = []
    if args.device in ('all', 'cpu'):
        devices.append('cpu')
    if args.device in ('all', 'cuda') and run_cuda:
        devices.append('cuda')
    results = []
    cache = {}
    for device in devices:
        t = time.perf_counter()
        if device == 'cuda':
            print('CUDA device: %s' % torch.cuda.get_device_name())
        results += check_device(device, cache)
        print('%s: %d checks in %.1f s' % (device, sum(r.device == device for r in results),
                                           time.perf_counter() - t))
    print()
    print('Worst error / tolerance per case (1.00 = at the tolerance; every gradient and the '
          'output; FAIL marks a miss):')
    print()
    print('\n'.join(summary_rows(results)))
    failed = [r for r in results if not r.ok]
    if failed:
        print()
        print('Failed checks:')
        for r in failed:
            print('  %s: %s' % (r.name(), r.detail))
    print()
    where = ' and '.join(devices) if devices else 'no device'
    n, seconds = len(results), time.perf_counter() - t0
    cuda_wanted = args.device in ('all', 'cuda')
    missing_cuda = cuda_wanted and not run_cuda
    if failed:
        print('FAIL: %d of %d checks of the ELSA operators on %s failed (first: %s: %s) [%.0f s]'
              % (len(failed), n, where, failed[0].name(), failed[0].detail, seconds))
        return 1
    if missing_cuda and (args.require_cuda or args.device == 'cuda'):
        print('FAIL: the CUDA part was not run: %s (%d checks on %s passed) [%.0f s]' %
              (why_not, n, where, seconds))
        return 1
    if n == 0:
        print('FAIL: nothing was checked [%.0f s]' % seconds)
        return 1
    note = ('; the CUDA part was NOT run: %s' % why_not) if missing_cuda else ''
    print('PASS: %d checks of the ELSA operators on %s match the float64 reference and rerun '
          'bitwise%s [%.0f s]' % (n, where, note, seconds))
    return 0


if __name__ == '__main__':
    sys.exit(main())
