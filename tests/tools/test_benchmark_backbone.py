"""tools/analysis_tools/benchmark_backbone.py: interleaved pairs with the model modes each mode
needs, the memory probe created only after every timed run (ONNX Runtime's included), the
dtype in every row, each thread count, and the ONNX Runtime rows (a shortened run on the
CPU)."""
import multiprocessing
import os.path as osp
import sys
import time
from types import SimpleNamespace

import pytest

from .conftest import REPO, needs_stack

pytestmark = needs_stack


@pytest.fixture
def bb():
    sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
    import benchmark_backbone
    return benchmark_backbone


def test_shortened_run(bb, monkeypatch, capsys):
    built, events = [], []
    build, times, probe = bb.build_backbone, bb.interleaved_times, bb.CpuPeak

    def record_build(*args):
        built.append(build(*args))
        return built[-1]

    def record_times(fns, *args):
        events.append(('time', len(fns), [m.training for m in built[-2:]]))
        return times(fns, *args)

    def record_probe():
        events.append(('probe', ))
        return probe()

    monkeypatch.setattr(bb, 'build_backbone', record_build)
    monkeypatch.setattr(bb, 'interleaved_times', record_times)
    monkeypatch.setattr(bb, 'CpuPeak', record_probe)
    bb.main(['--device', 'cpu', '--batch', '1', '--size', '32', '32', '--reps', '2',
             '--warmup', '0', '--threads', '1', '2', '--onnx'])
    # per thread count: train (both models training), infer (both in eval mode), ONNX
    # Runtime, then the probe after all of them (it lowers glibc's mmap threshold for the rest
    # of the process, which slowed the ONNX Runtime runs of one model more than the other's)
    per_count = [('time', 2, [True, True]), ('time', 2, [False, False]),
                 ('time', 2, [False, False]), ('probe', )]
    assert events == per_count * 2
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith('| 1 |') or
            r.startswith('| 2 |')]
    modes = [r.split(' | ')[1] for r in rows]
    assert modes == ['train', 'infer', 'export (s)', 'onnxruntime'] * 2
    assert all(r.split(' | ')[2] == 'float32' for r in rows)
    for row in rows[:2]:  # time and memory columns filled
        cells = row.strip('| ').split(' | ')
        assert float(cells[5]) > 0 and cells[8] != ''


PEAK_SCRIPT = r'''
import ctypes, sys, torch
# glibc's own choices made the earlier steps' leftovers vary from run to run (its mmap and trim
# thresholds move as chunks are freed; each thread may get its own arena), so the planted probe
# read anything from 0 to 80 MiB. Pinned, the three steps leave their memory free in one heap,
# as a long benchmark does, and only malloc_trim tells the two probes apart.
libc = ctypes.CDLL('libc.so.6')
libc.mallopt(-8, 1)  # M_ARENA_MAX
libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD, above the 8 MiB maps
from mmelsa.utils.benchmark import CpuPeak
torch.set_num_threads(2)
torch.manual_seed(0)
net = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Conv2d(32, 32, 3, padding=1),
                                                torch.nn.ReLU()) for _ in range(8)])
x = torch.randn(4, 32, 128, 128)
def step():
    net(x).sum().backward()
for _ in range(3):
    step()  # as a benchmark's timed runs come before its probe
probe = CpuPeak()
if sys.argv[1] == 'planted':  # the probe without handing the heap's free pages back
    probe._libc = type('NoTrim', (), {'malloc_trim': staticmethod(lambda pad: 0)})()
print(probe.measure(step))
'''


def _peak(kind):
    import subprocess
    out = subprocess.run([sys.executable, '-c', PEAK_SCRIPT, kind], capture_output=True,
                         text=True, cwd=REPO, check=True).stdout
    return float(out.split()[-1])


def test_cpu_peak_counts_memory_an_earlier_run_freed():
    """A training step after three others: its peak holds at least the 8 ReLU outputs autograd
    keeps (8 x 8 MiB), although the earlier steps left that much free in the heap. The planted
    probe (no malloc_trim) reads those reused pages as no growth and falls below it."""
    saved = 8 * 4 * 32 * 128 * 128 * 4
    assert _peak('real') >= saved
    assert _peak('planted') < saved


def test_compile_row_prints_a_bound_for_a_call_past_the_limit(bb, monkeypatch, capsys):
    asked = []

    def first_call_seconds(type_name, args, threads, shape):
        asked.append((type_name, threads, shape))
        return None if type_name == 'SwinTransformer' else 90.0

    monkeypatch.setattr(bb, 'compile_seconds', first_call_seconds)
    bb.main(['--device', 'cpu', '--batch', '1', '--size', '32', '32', '--reps', '1',
             '--warmup', '0', '--threads', '1', '--modes', 'infer', '--compile',
             '--compile-limit', '600'])
    assert asked == [('SwinTransformer', 1, (1, 3, 32, 32)),
                     ('ELSASwinTransformer', 1, (1, 3, 32, 32))]
    row = [r for r in capsys.readouterr().out.splitlines() if '| compile (s) |' in r]
    assert row == ['| 1 | compile (s) | float32 | > 600 | 90.0 | < 0.150 | | |']


def test_a_compiled_call_past_the_limit_is_stopped(bb):
    args = SimpleNamespace(with_cp=False, device='cpu', compile_limit=1)
    t0 = time.perf_counter()
    # the child's imports alone take longer than the limit
    assert bb.compile_seconds('SwinTransformer', args, 1, (1, 3, 32, 32)) is None
    assert time.perf_counter() - t0 < 30
    assert not multiprocessing.active_children()


def test_a_compiled_call_that_fails_is_an_error_not_a_bound(bb):
    args = SimpleNamespace(with_cp=False, device='cpu', compile_limit=600)
    with pytest.raises(RuntimeError, match='NoSuchBackbone failed'):
        bb.compile_seconds('NoSuchBackbone', args, 1, (1, 3, 32, 32))
