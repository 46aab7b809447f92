"""dev/bench/onnx_stage_profile.py: a shortened run, and its share of a profile's node times
among the blocks' parts."""
import os.path as osp
import sys

import pytest

from .conftest import REPO

sys.path.insert(0, osp.join(REPO, 'dev', 'bench'))
import onnx_stage_profile as bench  # noqa: E402


def node(name, ms):
    return dict(cat='Node', name=name + '_kernel_time', dur=ms * 1e3, ts=0)


def test_node_times_go_to_their_part_and_unnamed_ones_to_the_last():
    events = [
        node('/patch_embed/projection/Conv', 1),
        node('/stages.0/blocks.1/norm1/LayerNormalization', 2),
        node('/stages.0/blocks.1/attn/w_msa/MatMul', 4),
        node('ReorderOutput_token_7', 8),  # inserted by ONNX Runtime: no block in its name
        node('/layers.2/blocks.0/mlp/fc1/MatMul', 16),
        node('/layers.2/blocks.0/norm2/LayerNormalization', 32),
        dict(cat='Session', name='model_run', dur=5, ts=0),  # not a node: not counted
        # ONNX Runtime's fences around a kernel: not kernel time
        dict(cat='Node', name='/layers.2/blocks.0/mlp/fc1/MatMul_fence_before', dur=1e3, ts=0),
    ]
    ms = bench.part_times(events, reps=2)
    assert ms == {('stem', '', ''): 0.5, (0, 1, 'attn'): 7.0, (2, 0, 'mlp'): 24.0}


def test_shortened_run_prints_every_stage_and_the_total(capsys):
    bench.main(['--size', '32', '--reps', '1', '--threads', '1'])
    rows = [r.strip('| ').split(' | ') for r in capsys.readouterr().out.splitlines()
            if r.startswith('| ') and not r.startswith('| stage')]
    parts = [(r[0], r[1]) for r in rows]
    assert parts == [(str(s), k) for s in range(4) for k in ('attn', 'mlp')] + [
        ('all', '(with the stem)')]
    for row in rows:
        swin, elsa, diff = float(row[2]), float(row[3]), float(row[4])
        assert swin > 0 and elsa > 0 and diff == pytest.approx(elsa - swin, abs=0.011)
    total = rows[-1]
    assert float(total[2]) >= sum(float(r[2]) for r in rows[:-1]) - 0.05
