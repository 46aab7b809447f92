"""tools/analysis_tools/benchmark_backbone.py: interleaved pairs with the model modes each mode
needs, the memory probe created only after every timed run, the dtype in every row, each thread
count, and the ONNX Runtime rows (a shortened run on the CPU)."""
import os.path as osp
import sys

from .conftest import REPO, needs_stack

pytestmark = needs_stack


def test_shortened_run(monkeypatch, capsys):
    sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
    import benchmark_backbone as bb
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
    # per thread count: train (both models training), infer (both in eval mode), the probe
    # after them, then ONNX Runtime
    per_count = [('time', 2, [True, True]), ('time', 2, [False, False]), ('probe', ),
                 ('time', 2, [False, False])]
    assert events == per_count * 2
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith('| 1 |') or
            r.startswith('| 2 |')]
    modes = [r.split(' | ')[1] for r in rows]
    assert modes == ['train', 'infer', 'export (s)', 'onnxruntime'] * 2
    assert all(r.split(' | ')[2] == 'float32' for r in rows)
    for row in rows[:2]:  # time and memory columns filled
        cells = row.strip('| ').split(' | ')
        assert float(cells[5]) > 0 and cells[8] != ''
