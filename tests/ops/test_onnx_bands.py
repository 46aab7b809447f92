"""The band form of the export (:mod:`mmelsa.ops.onnx_bands`), eager in float64, against the
reference: any size (tiles cut short, maps narrower or lower than one tile, one row), kernel,
dilation, heads, plain or fused, with or without the additive ghost. Its ONNX Runtime runs are
in tests/deployment/test_plain_export.py."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmelsa.ops import onnx as export_forms
from mmelsa.ops import onnx_bands
from mmelsa.ops.onnx import elsa_export_form
from mmelsa.ops.onnx_bands import (COLUMNS, band_form_applies, elsa_band_form,
                                   elsa_band_form_channels_last)
from mmelsa.ops.reference import elsa_reference, max_rel_err
from tests.ops._helpers import PER_SAMPLE, make_inputs


@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 2), heads=st.integers(1, 3), per_head=st.integers(1, 4),
       H=st.integers(1, 11), W=st.integers(1, 3 * COLUMNS + 3),
       K=st.sampled_from([1, 3, 5, 7]), d=st.integers(1, 3), ghost_add=st.booleans(),
       logits=st.booleans(), seed=st.integers(0, 2**16))
def test_band_form_is_the_operator(B, heads, per_head, H, W, K, d, ghost_add, logits, seed):
    C = heads * per_head
    x, attn, _, ga = make_inputs(B, C, heads, H, W, K, d, 1, False, ghost_add, seed=seed)
    got = elsa_band_form(x, attn, heads, ga, K, d, attn_is_logits=logits)
    expected = elsa_reference(x, attn.softmax(2) if logits else attn, None, ga, K, d, 1)
    assert got.shape == expected.shape
    assert max_rel_err(got, expected) < 1e-12


@pytest.mark.parametrize('B,H,W', [(2, 5, 13), (1, 3, 2 * COLUMNS + 1), (1, 1, COLUMNS - 3)])
def test_channels_last_entry_takes_the_taps_last(B, H, W):
    """x (B, H, W, C) and the attention (B, H, W, G*K*K), head g's taps in channels
    [g*K*K, (g+1)*K*K), as a model's MatMuls give them; the result channels last."""
    x, attn, _, ga = make_inputs(B, 6, 3, H, W, 5, 1, 1, False, True)
    got = elsa_band_form_channels_last(x.permute(0, 2, 3, 1),
                                       attn.permute(0, 3, 4, 1, 2).reshape(B, H, W, 3 * 25), 3,
                                       ga, 5, 1, attn_is_logits=True)
    expected = elsa_reference(x, attn.softmax(2), None, ga, 5, 1, 1).permute(0, 2, 3, 1)
    assert got.shape == expected.shape and max_rel_err(got, expected) < 1e-12


@pytest.mark.parametrize('R,T', [(1, 1), (1, 2), (2, 5), (3, 1), (6, 2)])
def test_any_tile_size_is_the_operator(monkeypatch, R, T):
    """The tile size changes the graph, not the result (also below the window's halo, and tiles
    taller than the map)."""
    monkeypatch.setattr(onnx_bands, 'ROWS', R)
    monkeypatch.setattr(onnx_bands, 'COLUMNS', T)
    x, attn, _, ga = make_inputs(2, 6, 3, 5, 13, 5, 2, 1, False, True)
    got = elsa_band_form(x, attn, 3, ga, 5, 2, attn_is_logits=True)
    assert max_rel_err(got, elsa_reference(x, attn.softmax(2), None, ga, 5, 2, 1)) < 1e-12


def test_band_matrix_places_each_tap_on_its_band():
    E = onnx_bands._band_matrix(4, 3, 2, torch.float64)  # T=4, K=3, d=2: L = 4 + 4
    assert E.shape == (4, 3, 8)
    for j in range(4):
        for v in range(3):
            assert E[j, v].nonzero().flatten().tolist() == [j + 2 * v]


def test_export_form_chooses_the_bands_where_they_apply(monkeypatch):
    calls = []
    real = export_forms.elsa_band_form
    monkeypatch.setattr(export_forms, 'elsa_band_form',
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    for ghost_mul, ghost_add, stride, bands in [(False, True, 1, True), (False, False, 1, True),
                                                (True, True, 1, False), (False, True, 2, False),
                                                (False, PER_SAMPLE, 1, False)]:
        x, attn, gm, ga = make_inputs(2, 4, 2, 6, 7, 3, 1, stride, ghost_mul, ghost_add)
        assert band_form_applies(gm, ga, stride) == bands
        calls.clear()
        got = elsa_export_form(x, attn, gm, ga, 3, 1, stride)
        assert calls == ([1] if bands else [])
        assert max_rel_err(got, elsa_reference(x, attn, gm, ga, 3, 1, stride)) < 1e-12
        calls.clear()
        taps = elsa_export_form(x, attn, gm, ga, 3, 1, stride, form='taps')
        assert not calls and max_rel_err(taps, got) < 1e-12


def test_export_form_refuses_bands_where_they_do_not_apply():
    x, attn, gm, ga = make_inputs(1, 4, 2, 6, 7, 3, 1, 1, True, True)
    with pytest.raises(ValueError, match="form='bands' needs"):
        elsa_export_form(x, attn, gm, ga, 3, form='bands')
    with pytest.raises(ValueError, match="form must be None, 'taps' or 'bands', got 'band'"):
        elsa_export_form(x, attn, None, ga, 3, form='band')
