"""tools/analysis_tools/benchmark_ddf.py: the unfold computation it compares DDF with is DDF
(so the table compares like with like), and its tables have a row per case and direction."""
import os.path as osp
import sys

import torch

from mmelsa.ops import ddf

from .conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import benchmark_ddf as bench  # noqa: E402


def test_the_unfold_computation_is_ddf():
    gen = torch.Generator().manual_seed(0)
    for K, s in ((3, 1), (3, 2), (5, 1)):
        x = torch.randn(2, 6, 9, 8, generator=gen, dtype=torch.float64)
        cf = torch.randn(2, 6, K, K, generator=gen, dtype=torch.float64)
        sf = torch.randn(2, K * K, (9 - 1) // s + 1, (8 - 1) // s + 1, generator=gen,
                         dtype=torch.float64)
        torch.testing.assert_close(bench.unfold_ddf(x, cf, sf, K, s),
                                   ddf(x, cf, sf, K, 1, s, 'mul'))


def test_operator_table(monkeypatch, capsys):
    monkeypatch.setattr(bench, 'OP_CASES', {'tiny': (4, 9, 7, 3, 2), 'tiny K5': (4, 6, 6, 5, 1)})
    bench.main(['--part', 'op', '--batch', '2', '--reps', '1'])
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith('| tiny')]
    assert [r.split(' | ')[1] for r in rows] == ['fwd', 'fwd+bwd'] * 2
    for row in rows:
        cells = row.strip('| ').split(' | ')
        assert len(cells) == 10 and all(float(c) > 0 for c in cells[2:5]), row
