"""dev/bench/onnx_grouped_conv.py: a shortened run, every case agreeing with the float64
convolution, and its refusal of an export that disagrees."""
import os.path as osp
import sys

import pytest
import torch

from .conftest import REPO

sys.path.insert(0, osp.join(REPO, 'dev', 'bench'))
import onnx_grouped_conv as bench  # noqa: E402


def test_shortened_run_times_both_exports(capsys):
    bench.main(['--cases', 's3', '--reps', '1'])
    rows = [r.strip('| ').split(' | ') for r in capsys.readouterr().out.splitlines()
            if r.startswith('| s3 |')]
    assert len(rows) == 1
    assert float(rows[0][2]) > 0 and float(rows[0][3]) > 0 and float(rows[0][5]) < 1e-5


def test_an_export_that_disagrees_is_refused(monkeypatch):
    forward = bench.AsGrouped.forward
    monkeypatch.setattr(bench.AsGrouped, 'forward',
                        lambda self, x: forward(self, x) + torch.full_like(x, 1e-2))
    with pytest.raises(SystemExit, match='disagrees'):
        bench.main(['--cases', 's3', '--reps', '1'])
