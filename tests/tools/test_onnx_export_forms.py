"""dev/bench/onnx_export_forms.py: a shortened run on a small shape, and its refusal of a form
that disagrees with the float64 reference."""
import os.path as osp
import sys

import pytest

from .conftest import REPO

sys.path.insert(0, osp.join(REPO, 'dev', 'bench'))
import onnx_export_forms as forms  # noqa: E402


@pytest.mark.parametrize('ghost_mul', [False, True])
def test_shortened_run_times_every_form_and_each_agrees(capsys, ghost_mul):
    forms.main(['--shape', '8', '2', '9', '--reps', '1'] + ['--ghost-mul'] * ghost_mul)
    rows = [r.strip('| ').split(' | ') for r in capsys.readouterr().out.splitlines()
            if r.startswith('| custom |')]
    names = [name for name in forms.FORMS if not (ghost_mul and name == 'bands')]
    assert [r[2] for r in rows] == names
    assert rows[0][4] == '1.00'  # the tap form is the yardstick
    for row in rows:
        assert float(row[3]) > 0 and float(row[5]) < 1e-5


def test_a_form_that_disagrees_is_refused(monkeypatch):

    class Planted(forms.RowBands):  # off by 0.01 everywhere

        def forward(self, x, logits):
            return super().forward(x, logits) + 1e-2

    monkeypatch.setitem(forms.FORMS, 'planted', Planted)
    with pytest.raises(SystemExit, match='planted disagrees'):
        forms.main(['--shape', '8', '2', '9', '--reps', '1'])
