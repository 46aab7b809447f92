"""dev/bench/onnx_band_tiles.py: a shortened run on a small shape, and its refusal of a tile
size whose export disagrees with the float64 reference."""
import os.path as osp
import sys

import pytest

from mmelsa.ops import onnx_bands
from .conftest import REPO

sys.path.insert(0, osp.join(REPO, 'dev', 'bench'))
import onnx_band_tiles as tiles  # noqa: E402


def test_shortened_run_times_every_tile_and_each_agrees(capsys):
    default = onnx_bands.ROWS, onnx_bands.COLUMNS
    # 13 = one whole tile and a last one moved back, either way round
    tiles.main(['--shape', '8', '2', '13', '--reps', '1', '--tiles', '1x8', '4x8', '8x4'])
    rows = [r.strip('| ').split(' | ') for r in capsys.readouterr().out.splitlines()
            if r.startswith('| custom |')]
    assert [r[2] for r in rows] == ['1 x 8', '4 x 8', '8 x 4']
    assert rows[0][4] == '1.00'
    for row in rows:
        assert float(row[3]) > 0 and float(row[5]) < 1e-5
    assert (onnx_bands.ROWS, onnx_bands.COLUMNS) == default  # restored


def test_a_tile_that_disagrees_is_refused(monkeypatch):
    real = onnx_bands.elsa_band_form_channels_last

    def planted(x, *args, **kwargs):  # off by 0.01 at 8 x 4 tiles
        return real(x, *args, **kwargs) + 1e-2 * (onnx_bands.ROWS == 8)

    monkeypatch.setattr(onnx_bands, 'elsa_band_form_channels_last', planted)
    with pytest.raises(SystemExit, match=r'tile \(8, 4\) disagrees'):
        tiles.main(['--shape', '8', '2', '13', '--reps', '1', '--tiles', '4x8', '8x4'])
