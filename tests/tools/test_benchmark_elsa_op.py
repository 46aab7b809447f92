"""tools/analysis_tools/benchmark_elsa_op.py --compare-generic: its plumbing, run on the CPU.

The comparison itself needs a GPU (dev/gpu/gpu_run.sh runs it); here both variants reach
the same CPU kernels, so the table must report them equal and the switch must be restored.
"""
import argparse
import os
import os.path as osp
import sys

import pytest

from .conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import benchmark_elsa_op as bench  # noqa: E402


def test_compare_generic_table_on_cpu(monkeypatch, capsys):
    monkeypatch.setitem(bench.CASES, 'tiny', (1, 4, 9, 10, 2))
    seen = []
    monkeypatch.delenv('MMELSA_CUDA_NO_TILED', raising=False)
    bench.main_compare_generic(argparse.Namespace(batch=None), 'cpu', ['float64'], ['tiny'],
                               reps=1, warmup=0)
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith('| tiny |')]
    # plain and fused, three directions each
    assert [r.split(' | ')[3:5] for r in rows] == [
        [op, d] for op in ('plain', 'fused') for d in ('fwd', 'bwd', 'fwd+bwd')]
    for row in rows:
        cells = row.strip('| ').split(' | ')
        assert float(cells[8]) == 0.0 and cells[9] == 'yes', row  # same kernels: equal results
    assert 'MMELSA_CUDA_NO_TILED' not in os.environ
    # inside a generic() call the switch is on
    bench.generic(lambda: seen.append(os.environ.get('MMELSA_CUDA_NO_TILED')))()
    assert seen == ['1'] and 'MMELSA_CUDA_NO_TILED' not in os.environ


def test_compare_generic_refuses_cpu(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['benchmark_elsa_op.py', '--device', 'cpu',
                                      '--compare-generic'])
    with pytest.raises(SystemExit, match='--compare-generic'):
        bench.main()
