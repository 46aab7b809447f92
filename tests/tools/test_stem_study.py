"""tools/analysis_tools/stem_study.py: its token-similarity measure, its schedule, and a
shortened run of the study whose divergence flag is shown to fire."""
import json
import math
import os.path as osp
import sys

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import stem_study as study  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 3), N=st.integers(2, 7), D=st.integers(1, 5), seed=st.integers(0, 999))
def test_token_similarity_is_the_mean_pairwise_cosine(B, N, D, seed):
    tokens = torch.randn(B, N, D, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
    per_image = []
    for b in range(B):
        pairs = [torch.nn.functional.cosine_similarity(tokens[b, i], tokens[b, j], dim=0)
                 for i in range(N) for j in range(N) if i != j]
        per_image.append(sum(pairs) / len(pairs))
    assert abs(study.token_similarity(tokens) - float(sum(per_image) / B)) < 1e-12


def test_token_similarity_extremes():
    same = torch.ones(2, 5, 3)
    assert abs(study.token_similarity(same) - 1) < 1e-12
    assert abs(study.token_similarity(torch.eye(4).unsqueeze(0))) < 1e-12


def test_schedule():
    lr, warmup, iters = 1e-3, 10, 100
    assert math.isclose(study.lr_at(0, lr, warmup, iters), 0.01 * lr)
    assert math.isclose(study.lr_at(warmup, lr, warmup, iters), lr)
    assert study.lr_at(iters - 1, lr, warmup, iters) < 0.01 * lr
    assert study.lr_at(0, lr, 0, iters) == lr


def test_stem_tokens_are_the_patch_embeddings_output():
    for model in study.MODELS:
        for stem in study.STEMS:
            net = study.Classifier(model, stem).eval()
            tokens = study.stem_tokens(net, torch.randn(2, 3, 64, 64))
            grid = 16 if model == 'elsa-swin' else 8  # patch 4 / patch 8 at 64 px
            assert tokens.shape == (2, grid * grid, 32 if model == 'elsa-swin' else 64)


def test_shortened_run(tmp_path):
    from mmelsa.datasets.toy import generate_toy_cls
    root = generate_toy_cls(str(tmp_path / 'data'), seed=0, num_train=8, num_val=6)
    out, plot = tmp_path / 'rows.json', tmp_path / 'study.png'
    # lr inf: the first step sends the weights to inf, the next loss is non-finite
    study.main(['--data', root, '--models', 'vit', '--lrs', '1e-3', 'inf', '--warmups', '0',
                '--iters', '3', '--batch', '4', '--out', str(out), '--plot', str(plot)])
    rows = json.loads(out.read_text())
    assert [(r['stem'], r['lr']) for r in rows] == [(s, lr) for lr in (1e-3, math.inf)
                                                    for s in study.STEMS]
    for r in rows:
        assert -1 <= r['cos_init'] <= 1
        if r['lr'] == math.inf:
            assert r['status'] == 'nan' and r['top1'] is None, r
        else:
            assert r['status'] in ('ok', 'chance') and 0 <= r['top1'] <= 1, r
            assert -1 <= r['cos_end'] <= 1
    assert plot.stat().st_size > 0
