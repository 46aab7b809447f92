"""A bare ``torch.onnx.export(model, ...)`` of models holding ELSA: no registration, no
translation table, no mmelsa argument. While exporting, ``elsa_attention`` computes itself in
standard torch ops (:func:`mmelsa.ops.onnx.elsa_export_form`), so both exporters work at
opsets 11 and 17. Checked in ONNX Runtime against the float64 reference (the operator) or
PyTorch eager (the backbone) at the export size and two other, odd, sizes.
"""
import os
import warnings

import onnx
import onnxruntime  # noqa: F401  (a missing install must fail here)
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import mmelsa
from mmelsa.deployment import OnnxRunner, TensorModeModel, min_dynamic_size
from mmelsa.models import ELSASwinTransformer
from mmelsa.ops import elsa_attention
from mmelsa.ops import onnx as export_forms
from mmelsa.ops.onnx import elsa_export_form
from mmelsa.ops.reference import elsa_reference, max_rel_err
from tests.ops._helpers import PER_SAMPLE, make_inputs

TOL = 1e-4  # max |onnx - expected| / max(1, max |expected|), float32
EXPORTERS = [pytest.param(True, id='dynamo'), pytest.param(False, id='legacy')]
OPSETS = [11, 17]
STANDARD_DOMAINS = {'', 'ai.onnx'}


def assert_standard_onnx(path, opset, dynamo):
    """Only standard ONNX domains in the graph; the legacy exporter writes the opset asked for.
    The dynamo exporter builds opset 18 and keeps it when onnx's version converter cannot
    lower the graph (it has no Pad adapter from 18 to 17), so it is >= the one asked for."""
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert {n.domain for n in proto.graph.node} <= STANDARD_DOMAINS
    assert {o.domain for o in proto.opset_import} <= STANDARD_DOMAINS
    assert not proto.functions
    version = {o.domain: o.version for o in proto.opset_import}.get('', None)
    if version is None:
        version = {o.domain: o.version for o in proto.opset_import}['ai.onnx']
    assert version == opset if not dynamo else version >= opset
    return proto


def assert_runner_agrees(runner, model, shapes, tol=TOL):
    """Each output of the ONNX file equals the eager model's on random inputs of each shape."""
    for shape in shapes:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x)
        got = runner(x)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == tuple(e.shape)
            assert max_rel_err(torch.from_numpy(g), e) < tol, shape


class ElsaOp(nn.Module):
    """The operator with its ghosts as parameters (as in a model); inputs x and attn. Without
    the multiplicative ghost at stride 1 it exports in the band form."""

    def __init__(self, channels, kernel_size, dilation, stride, attn_is_logits, ghost_mul=True):
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        shape = (channels, kernel_size, kernel_size)
        self.ghost_mul = nn.Parameter(torch.randn(shape, generator=gen)) if ghost_mul else None
        self.ghost_add = nn.Parameter(torch.randn(shape, generator=gen))
        self.hyper = (kernel_size, dilation, stride)
        self.attn_is_logits = attn_is_logits

    def forward(self, x, attn):
        return elsa_attention(x, attn, self.ghost_mul, self.ghost_add, *self.hyper,
                              attn_is_logits=self.attn_is_logits)


@pytest.mark.parametrize('kernel_size,dilation,stride,ghost_mul,ghost_add', [
    (3, 1, 1, True, True), (5, 2, 2, False, True), (1, 1, 1, True, False),
    (3, 1, 3, False, False), (7, 3, 1, True, True),  # padding 9 > H: slices reach past x
])
def test_export_form_matches_reference(kernel_size, dilation, stride, ghost_mul, ghost_add):
    """The torch-op form, eager in float64, is the operator (plain and fused)."""
    x, attn, gm, ga = make_inputs(2, 8, 2, 7, 11, kernel_size, dilation, stride, ghost_mul,
                                  ghost_add)
    hyper = (kernel_size, dilation, stride)
    torch.testing.assert_close(elsa_export_form(x, attn, gm, ga, *hyper),
                               elsa_reference(x, attn, gm, ga, *hyper), rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(elsa_export_form(x, attn, gm, ga, *hyper, attn_is_logits=True),
                               elsa_reference(x, attn.softmax(2), gm, ga, *hyper),
                               rtol=1e-12, atol=1e-12)


GHOSTS = st.sampled_from([False, True, PER_SAMPLE])


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 2), heads=st.integers(1, 4), per_head=st.integers(1, 5),
       H=st.integers(1, 9), W=st.integers(1, 9), K=st.sampled_from([1, 3, 5]),
       d=st.integers(1, 2), s=st.integers(1, 3), ghost_mul=GHOSTS, ghost_add=GHOSTS,
       logits=st.booleans(), chunk=st.one_of(st.none(), st.integers(1, 12)),
       seed=st.integers(0, 2**16))
def test_export_form_in_any_chunking(B, heads, per_head, H, W, K, d, s, ghost_mul, ghost_add,
                                     logits, chunk, seed):
    """The taps run over the channels in chunks (slices of a head or runs of whole heads) and
    logits are normalised after the sum; whatever the chunk size, the form is the operator."""
    C = heads * per_head
    x, attn, gm, ga = make_inputs(B, C, heads, H, W, K, d, s, ghost_mul, ghost_add, seed=seed)
    got = elsa_export_form(x, attn, gm, ga, K, d, s, attn_is_logits=logits,
                           chunk_channels=chunk)
    expected = elsa_reference(x, attn.softmax(2) if logits else attn, gm, ga, K, d, s)
    assert max_rel_err(got, expected) < 1e-12


@settings(max_examples=60, deadline=None)
@given(heads=st.integers(1, 6), per_head=st.integers(1, 40), size=st.integers(1, 100))
def test_chunks_cover_each_channel_once_in_order(heads, per_head, size):
    chunks = export_forms._chunks(heads, per_head, size)
    channels = [g * per_head + c for (g0, g1), (c0, c1) in chunks for g in range(g0, g1)
                for c in range(c0, c1)]
    assert channels == list(range(heads * per_head))
    assert all(g1 - g0 == 1 or (c0, c1) == (0, per_head) for (g0, g1), (c0, c1) in chunks)
    assert max((g1 - g0) * (c1 - c0) for (g0, g1), (c0, c1) in chunks) <= max(size, per_head)


def export_operator(module, x, attn, path, dynamo, opset):
    """Export an :class:`ElsaOp` with dynamic batch and sizes; the checked ONNX proto."""
    if dynamo:
        auto = torch.export.Dim.AUTO  # attn's Ho, Wo follow H, W through the stride
        torch.onnx.export(module, (x, attn), path, dynamo=True, opset_version=opset,
                          dynamic_shapes={'x': {0: auto, 2: auto, 3: auto},
                                          'attn': {0: auto, 3: auto, 4: auto}})
    else:
        torch.onnx.export(module, (x, attn), path, dynamo=False, opset_version=opset,
                          input_names=['x', 'attn'],
                          dynamic_axes={'x': {0: 'b', 2: 'h', 3: 'w'},
                                        'attn': {0: 'b', 3: 'ho', 4: 'wo'}})
    return assert_standard_onnx(path, opset, dynamo)


def assert_operator_file_agrees(path, module, sizes, heads):
    """The file's output equals the float64 reference at each (batch, height, width)."""
    K, d, s = module.hyper
    runner = OnnxRunner(path)
    names = [i.name for i in runner.session.get_inputs()]
    ghosts = tuple(None if g is None else g.detach().double()
                   for g in (module.ghost_mul, module.ghost_add))
    C = module.ghost_add.shape[0]
    for batch, height, width in sizes:
        x, attn, _, _ = make_inputs(batch, C, heads, height, width, K, d, s, False, False,
                                    dtype=torch.float32, seed=height)
        got = runner.session.run(None, {names[0]: x.numpy(), names[1]: attn.numpy()})[0]
        probs = attn.double().softmax(2) if module.attn_is_logits else attn.double()
        expected = elsa_reference(x.double(), probs, *ghosts, K, d, s)
        assert got.shape == tuple(expected.shape)
        assert max_rel_err(torch.from_numpy(got), expected) < TOL, (batch, height, width)


@pytest.mark.parametrize('opset', OPSETS)
@pytest.mark.parametrize('dynamo', EXPORTERS)
@pytest.mark.parametrize('fused', [False, True], ids=['plain', 'fused'])
@pytest.mark.parametrize('chunked', [False, True], ids=['whole', 'chunked'])
def test_bare_export_of_the_operator(tmp_path, monkeypatch, chunked, fused, dynamo, opset):
    if chunked:  # one channel a chunk, whatever the size: the graph holds 8 chunks
        monkeypatch.setattr(export_forms, '_CHUNK_BYTES', 1)
        monkeypatch.setattr(export_forms, '_MIN_CHUNK_SHARE', 8)
        monkeypatch.setattr(export_forms, '_DEFAULT_CHUNK_CHANNELS', 1)
    C, G, K, d, s = 8, 2, 3, 2, 2
    module = ElsaOp(C, K, d, s, attn_is_logits=fused).eval()
    x, attn, _, _ = make_inputs(2, C, G, 12, 10, K, d, s, False, False, dtype=torch.float32)
    proto = export_operator(module, x, attn, str(tmp_path / 'elsa.onnx'), dynamo, opset)
    # logits are normalised after the sum (Exp, no Softmax over the taps' non-last axis)
    assert fused == any(n.op_type == 'Exp' for n in proto.graph.node)
    assert not any(n.op_type == 'Softmax' for n in proto.graph.node)
    taps = sum(n.op_type == 'Mul' for n in proto.graph.node)
    assert taps >= (C if chunked else 1) * K * K, taps  # one product per tap per chunk
    # the export size first
    assert_operator_file_agrees(str(tmp_path / 'elsa.onnx'), module,
                                [(2, 12, 10), (1, 7, 13), (3, 17, 9)], G)


@pytest.mark.parametrize('opset', OPSETS)
@pytest.mark.parametrize('dynamo', EXPORTERS)
@pytest.mark.parametrize('fused', [False, True], ids=['plain', 'fused'])
def test_bare_export_of_the_band_form(tmp_path, fused, dynamo, opset):
    """Without a multiplicative ghost, at stride 1, the graph is the band form (two MatMuls, no
    product per tap, Gather nodes) and runs at sizes narrower and lower than a tile, cut
    mid-tile, and longer."""
    C, G, K, d = 8, 2, 3, 2
    module = ElsaOp(C, K, d, 1, attn_is_logits=fused, ghost_mul=False).eval()
    x, attn, _, _ = make_inputs(2, C, G, 12, 10, K, d, 1, False, False, dtype=torch.float32)
    proto = export_operator(module, x, attn, str(tmp_path / 'elsa.onnx'), dynamo, opset)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count('MatMul') == 2 and ops.count('Slice') < K * K, sorted(ops)
    # its gathers are plain Gather nodes (advanced indexing gave GatherND between Transposes)
    assert 'GatherND' not in ops
    assert_operator_file_agrees(str(tmp_path / 'elsa.onnx'), module,
                                [(2, 12, 10), (1, 7, 5), (3, 17, 9), (1, 4, 27), (1, 2, 3)], G)


@pytest.mark.parametrize('dynamo', EXPORTERS)
def test_elsa_module_exports_channels_last(tmp_path, dynamo):
    """ELSAAttention exports channels last: its 1 x 1 convolutions are MatMuls, q, k and v are
    not split from one tensor, and its only Transposes are the four around its two depth-wise
    convolutions (which ONNX Runtime folds into its blocked-layout reorders), none around the
    attention or the band form; the file agrees with eager at odd sizes."""
    from mmelsa.models import ELSAAttention
    torch.manual_seed(0)
    module = ELSAAttention(24, num_heads=3, kernel_size=5, group_width=4).eval()
    x = torch.randn(2, 12, 10, 24)
    path = str(tmp_path / 'elsa_module.onnx')
    if dynamo:
        auto = torch.export.Dim.AUTO
        torch.onnx.export(module, (x, ), path, dynamo=True,
                          dynamic_shapes={'x': {0: auto, 1: auto, 2: auto}})
    else:
        torch.onnx.export(module, (x, ), path, dynamo=False, opset_version=17,
                          input_names=['x'], dynamic_axes={'x': {0: 'b', 1: 'h', 2: 'w'}})
    # the graph ONNX Runtime runs: constants folded (the weights' slices and transposes)
    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(tmp_path / 'folded.onnx')
    onnxruntime.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    nodes = onnx.load(opts.optimized_model_filepath).graph.node
    ops = [n.op_type for n in nodes]
    assert ops.count('Transpose') == 4 and 'Split' not in ops, sorted(ops)
    # the 1 x 1 convolutions are MatMuls: the Convs left are the two depth-wise ones
    groups = [a.i for n in nodes if n.op_type == 'Conv' for a in n.attribute if a.name == 'group']
    assert len(groups) == ops.count('Conv') == 2 and min(groups) > 1, sorted(ops)
    runner = OnnxRunner(path)
    name = runner.session.get_inputs()[0].name
    for shape in [(2, 12, 10), (1, 7, 37), (1, 1, 3)]:
        x = torch.randn(*shape, 24)
        got = torch.from_numpy(runner.session.run(None, {name: x.numpy()})[0])
        with torch.no_grad():
            assert max_rel_err(got, module(x).double()) < TOL, shape


def small_elsa_swin():
    torch.manual_seed(0)
    # ELSA (fused op, eval mode) in the first two stages; a plain and a shifted window block
    # in the last one
    return ELSASwinTransformer(embed_dims=16, depths=(1, 1, 1, 2), num_heads=(1, 2, 2, 4),
                               window_size=7, elsa_kernel_size=5, group_width=4,
                               drop_path_rate=0.).eval()


@pytest.mark.parametrize('opset', OPSETS)
@pytest.mark.parametrize('dynamo', EXPORTERS)
def test_bare_export_of_elsa_swin(tmp_path, dynamo, opset):
    model = small_elsa_swin()
    x = torch.randn(2, 3, 64, 96)
    path = str(tmp_path / 'elsa_swin.onnx')
    if dynamo:
        low = min_dynamic_size(TensorModeModel(model, 'backbone'))  # no feature map of size 1
        dim = torch.export.Dim
        torch.onnx.export(model, (x, ), path, dynamo=True, opset_version=opset,
                          dynamic_shapes={'x': {0: dim('batch', max=64),
                                                2: dim('height', min=low, max=1024),
                                                3: dim('width', min=low, max=1024)}})
    else:
        torch.onnx.export(model, (x, ), path, dynamo=False, opset_version=opset,
                          input_names=['x'], dynamic_axes={'x': {0: 'b', 2: 'h', 3: 'w'}})
    assert_standard_onnx(path, opset, dynamo)
    # the export size, odd sizes, one where the last stage has several (shifted) windows
    assert_runner_agrees(OnnxRunner(path), model,
                         [(2, 3, 64, 96), (1, 3, 37, 53), (1, 3, 233, 263)])


def test_dynamo_export_without_onnxscripts_optimizer(tmp_path):
    """``optimize=False`` (the README's advice for large graphs) gives a file ONNX Runtime
    runs and agrees with, at the export size and an odd one."""
    model = small_elsa_swin()
    path = str(tmp_path / 'elsa_swin_unoptimised.onnx')
    low = min_dynamic_size(TensorModeModel(model, 'backbone'))
    dim = torch.export.Dim
    torch.onnx.export(model, (torch.randn(1, 3, 64, 96), ), path, dynamo=True, opset_version=18,
                      optimize=False,
                      dynamic_shapes={'x': {0: dim.DYNAMIC, 2: dim('height', min=low, max=1024),
                                            3: dim('width', min=low, max=1024)}})
    assert_standard_onnx(path, 18, True)
    assert_runner_agrees(OnnxRunner(path), model, [(1, 3, 64, 96), (2, 3, 37, 53)])


def test_torchscript_export_prints_no_tracer_warning_from_the_checks(tmp_path):
    """The argument checks compare the traced example's sizes, which are tensors while the
    TorchScript exporter traces; they add nothing to the graph, so they do not warn (they
    printed 50 TracerWarnings for this model)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        torch.onnx.export(small_elsa_swin(), (torch.randn(1, 3, 64, 96), ),
                          str(tmp_path / 'm.onnx'), dynamo=False, opset_version=17)
    package = os.path.dirname(os.path.abspath(mmelsa.__file__)) + os.sep
    ours = [(w.filename, w.lineno) for w in seen if issubclass(w.category, torch.jit.TracerWarning)
            and os.path.abspath(w.filename).startswith(package)]
    assert not ours


def test_the_checks_still_refuse_bad_arguments_while_traced():
    x = torch.randn(1, 4, 6, 6)
    bad_attn = torch.randn(1, 3, 9, 6, 6)  # 3 heads do not divide 4 channels
    with pytest.raises(ValueError, match='divisible by the heads'):
        torch.jit.trace(lambda x, a: elsa_attention(x, a, kernel_size=3), (x, bad_attn))
