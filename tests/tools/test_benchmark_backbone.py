"""tools/analysis_tools/benchmark_backbone.py: fp32 runs, and inference timed in eval mode."""
import os.path as osp
import sys

from .conftest import REPO, needs_stack

pytestmark = needs_stack


def test_fp32_modes_and_eval_inference(monkeypatch, capsys):
    sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
    import benchmark_backbone as bb
    built, training_when_timed = [], []
    build, time_fn = bb.build_backbone, bb.time_fn

    def record_build(*args):
        built.append(build(*args))
        return built[-1]

    def record_time(fn, *args):
        training_when_timed.append(built[-1].training)
        return time_fn(fn, *args)

    monkeypatch.setattr(bb, 'build_backbone', record_build)
    monkeypatch.setattr(bb, 'time_fn', record_time)
    # --amp-dtype none crashed before (it looked up torch.none)
    bb.main(['--device', 'cpu', '--batch', '1', '--size', '32', '32', '--reps', '1',
             '--warmup', '0', '--amp-dtype', 'none'])
    # Swin-T then ELSA-Swin-T, each train (train mode) then infer (eval mode: no drop path)
    assert training_when_timed == [True, False, True, False]
    out = capsys.readouterr().out
    assert 'AMP none' in out and '| train |' in out and '| infer |' in out

    training_when_timed.clear()
    bb.main(['--device', 'cpu', '--batch', '1', '--size', '32', '32', '--reps', '1',
             '--warmup', '0', '--amp-dtype', 'none', '--modes', 'infer'])
    assert training_when_timed == [False, False]
    assert '| train |' not in capsys.readouterr().out


def test_zero_cpu_peak_prints_na(monkeypatch, capsys):
    """A tiny run's CPU peak can measure 0 bytes (CI did): the table said ZeroDivisionError."""
    sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
    import benchmark_backbone as bb

    def no_growth(fn, device, cpu_peak=None):
        fn()
        return 0

    monkeypatch.setattr(bb, 'peak_memory', no_growth)
    bb.main(['--device', 'cpu', '--batch', '1', '--size', '32', '32', '--reps', '1',
             '--warmup', '0', '--amp-dtype', 'none', '--modes', 'infer'])
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith('| infer |'))
    assert row.endswith('| 0.000 | 0.000 | n/a |')
