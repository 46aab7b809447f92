"""ONNX export of the raw ELSA operators through their custom translations, and of ELSA-Swin
models through :func:`mmelsa.deployment.export_onnx` and its tool, checked in ONNX Runtime
against PyTorch eager (or the float64 reference) at the export size and at other sizes;
torch.export of the backbone with a dynamic height and width. (The plain
``torch.onnx.export`` of models is tested in test_plain_export.py.)

onnx / onnxruntime are imported plainly: without them these tests fail, they never skip.
"""
import os
import os.path as osp
import subprocess
import sys

import onnx
import onnxruntime  # noqa: F401  (a missing install must fail here)
import pytest
import torch
from torch import nn

import mmelsa  # noqa: F401
from mmelsa.deployment import (OnnxRunner, TensorModeModel, build_from_config, export_onnx,
                               load_image, min_dynamic_size)
from mmelsa.models import ELSASwinTransformer
from mmelsa.ops.onnx import ONNX_OPSET, custom_translation_table
from tests.ops._helpers import make_inputs, max_rel_err
from mmelsa.ops.reference import elsa_reference

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = osp.join(REPO, 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py')
SEG = osp.join(REPO, 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py')
CLS = osp.join(REPO, 'configs/toy/elsa-swin-toy_1xb32-8e_toy-cls-64px.py')
TOL = 1e-4  # max |onnx - expected| / max(1, max |expected|), float32


class ElsaOp(nn.Module):
    """The raw operator ``torch.ops.mmelsa.elsa_forward`` (``elsa_softmax_forward``) with
    fixed ghosts (parameters, as in the model); inputs x and attn. Called directly, not
    through ``elsa_attention`` (which exports as standard torch ops), so that the export
    goes through the custom translation."""

    def __init__(self, channels, kernel_size, dilation, stride, ghost_mul, ghost_add,
                 attn_is_logits=False):
        super().__init__()
        self.attn_is_logits = attn_is_logits
        gen = torch.Generator().manual_seed(1)
        shape = (channels, kernel_size, kernel_size)
        self.ghost_mul = nn.Parameter(torch.randn(shape, generator=gen)) if ghost_mul else None
        self.ghost_add = nn.Parameter(torch.randn(shape, generator=gen)) if ghost_add else None
        self.hyper = (kernel_size, dilation, stride)

    def forward(self, x, attn):
        op = torch.ops.mmelsa.elsa_softmax_forward if self.attn_is_logits else \
            torch.ops.mmelsa.elsa_forward
        return op(x, attn, self.ghost_mul, self.ghost_add, *self.hyper)


def _export_op(module, x, attn, path, dynamo):
    if dynamo:
        auto = torch.export.Dim.AUTO  # attn's Ho, Wo follow H, W through the stride
        torch.onnx.export(module, (x, attn), path, dynamo=True, opset_version=ONNX_OPSET,
                          input_names=['x', 'attn'],
                          dynamic_shapes={'x': {0: auto, 2: auto, 3: auto},
                                          'attn': {0: auto, 3: auto, 4: auto}},
                          custom_translation_table=custom_translation_table())
    else:
        custom_translation_table()  # registers the legacy symbolic
        torch.onnx.export(module, (x, attn), path, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=['x', 'attn'], output_names=['out'],
                          dynamic_axes={'x': {0: 'b', 2: 'h', 3: 'w'},
                                        'attn': {0: 'b', 3: 'ho', 4: 'wo'},
                                        'out': {0: 'b', 2: 'ho', 3: 'wo'}})
    onnx.checker.check_model(onnx.load(path), full_check=True)


@pytest.mark.parametrize('dynamo', [True, False], ids=['dynamo', 'legacy'])
@pytest.mark.parametrize('kernel_size,dilation,stride,ghost_mul,ghost_add', [
    (3, 1, 1, True, True),
    (5, 2, 2, False, True),
    (1, 1, 1, True, False),
    (3, 1, 3, False, False),
    (7, 1, 1, False, True),  # ELSA-Swin's setting
])
def test_elsa_op_matches_reference(tmp_path, dynamo, kernel_size, dilation, stride, ghost_mul,
                                   ghost_add):
    C, G = 8, 2
    module = ElsaOp(C, kernel_size, dilation, stride, ghost_mul, ghost_add).eval()
    x, attn, _, _ = make_inputs(2, C, G, 12, 10, kernel_size, dilation, stride, False, False,
                                dtype=torch.float32)
    path = str(tmp_path / 'elsa.onnx')
    _export_op(module, x, attn, path, dynamo)
    runner = OnnxRunner(path)
    names = [i.name for i in runner.session.get_inputs()]
    ghosts = [None if g is None else g.detach().double()
              for g in (module.ghost_mul, module.ghost_add)]
    for batch, height, width in [(2, 12, 10), (1, 7, 13), (3, 17, 9)]:  # export size first
        x, attn, _, _ = make_inputs(batch, C, G, height, width, kernel_size, dilation, stride,
                                    False, False, dtype=torch.float32, seed=height)
        got = runner.session.run(None, {names[0]: x.numpy(), names[1]: attn.numpy()})[0]
        expected = elsa_reference(x.double(), attn.double(), *ghosts, kernel_size, dilation,
                                  stride)
        assert got.shape == tuple(expected.shape)
        assert max_rel_err(torch.from_numpy(got), expected) < TOL, (batch, height, width)


@pytest.mark.parametrize('dynamo', [True, False], ids=['dynamo', 'legacy'])
@pytest.mark.parametrize('kernel_size,dilation,stride,ghost_mul,ghost_add', [
    (3, 2, 2, True, True),
    (7, 1, 1, False, True),  # ELSA-Swin's setting
])
def test_fused_softmax_op_matches_reference(tmp_path, dynamo, kernel_size, dilation, stride,
                                            ghost_mul, ghost_add):
    """The fused op (attn_is_logits=True) exports as an ONNX Softmax over the taps followed by
    the plain operator's graph, and matches the float64 reference of softmax + ELSA."""
    C, G = 8, 2
    module = ElsaOp(C, kernel_size, dilation, stride, ghost_mul, ghost_add, True).eval()
    x, logits, _, _ = make_inputs(2, C, G, 12, 10, kernel_size, dilation, stride, False, False,
                                  dtype=torch.float32)
    path = str(tmp_path / 'elsa_softmax.onnx')
    _export_op(module, x, logits, path, dynamo)
    assert any(n.op_type == 'Softmax' for n in onnx.load(path).graph.node)
    runner = OnnxRunner(path)
    names = [i.name for i in runner.session.get_inputs()]
    ghosts = [None if g is None else g.detach().double()
              for g in (module.ghost_mul, module.ghost_add)]
    for batch, height, width in [(2, 12, 10), (1, 7, 13)]:
        x, logits, _, _ = make_inputs(batch, C, G, height, width, kernel_size, dilation, stride,
                                      False, False, dtype=torch.float32, seed=height)
        logits = logits * 3
        got = runner.session.run(None, {names[0]: x.numpy(), names[1]: logits.numpy()})[0]
        expected = elsa_reference(x.double(), logits.double().softmax(2), *ghosts, kernel_size,
                                  dilation, stride)
        assert max_rel_err(torch.from_numpy(got), expected) < TOL, (batch, height, width)


def small_backbone():
    torch.manual_seed(0)
    # depth 2 in the last (window-attention) stage: a plain and a shifted block
    return ELSASwinTransformer(embed_dims=16, depths=(1, 1, 2, 2), num_heads=(1, 2, 2, 4),
                               window_size=7, elsa_kernel_size=5, group_width=4,
                               drop_path_rate=0.).eval()


def _assert_outputs_close(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == tuple(e.shape)
        assert max_rel_err(torch.from_numpy(g), e) < TOL


def test_backbone_with_abs_pos_embed_exports_static_only(tmp_path):
    torch.manual_seed(0)
    model = ELSASwinTransformer(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
                                group_width=4, use_abs_pos_embed=True, pretrain_img_size=64,
                                drop_path_rate=0.).eval()
    module = TensorModeModel(model, 'backbone').eval()
    x = torch.randn(1, 3, 64, 64)
    for dynamo in (True, False):
        with pytest.raises(ValueError, match='use_abs_pos_embed=True.*export without --dynamic'):
            export_onnx(module, x, str(tmp_path / 'm.onnx'), dynamic=True, dynamo=dynamo)
    assert not os.listdir(tmp_path)
    path = export_onnx(module, x, str(tmp_path / 'ape.onnx'), dynamic=False, dynamo=True)
    with torch.no_grad():
        expected = module(x)
    _assert_outputs_close(OnnxRunner(path)(x), expected)


def test_torch_export_dynamic_height_width():
    model = small_backbone()
    dims = torch.export.Dim
    low = min_dynamic_size(TensorModeModel(model, 'backbone'))
    program = torch.export.export(
        model, (torch.randn(2, 3, 64, 96), ),
        dynamic_shapes={'x': {0: dims('b', max=64), 2: dims('h', min=low, max=1024),
                              3: dims('w', min=low, max=1024)}})
    exported = program.module()
    for shape in [(1, 3, 37, 53), (3, 3, 129, 71)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x)
            got = exported(x)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def toy_images(tmp_path_factory):
    from mmelsa.datasets.toy import generate_toy_ade, generate_toy_coco
    root = str(tmp_path_factory.mktemp('toy'))
    ade = generate_toy_ade(root, seed=0, num_train=1, num_val=1)
    coco = generate_toy_coco(root, seed=0, num_train=1, num_val=1)
    return (osp.join(ade, 'images', 'validation', os.listdir(
        osp.join(ade, 'images', 'validation'))[0]),
            osp.join(coco, 'val', os.listdir(osp.join(coco, 'val'))[0]))


def _config(path):
    from mmengine.config import Config
    return Config.fromfile(path)


def test_toy_segmenter_whole_model_argmax(tmp_path, toy_images):
    module, norm = build_from_config(_config(SEG), part='model')
    x = load_image(toy_images[0], (128, 128), norm)
    path = export_onnx(module, x, str(tmp_path / 'seg.onnx'), dynamic=False, dynamo=True)
    with torch.no_grad():
        (expected, ) = module(x)
    (got, ) = OnnxRunner(path)(x)
    assert got.shape == tuple(expected.shape)
    agree = (got.argmax(1) == expected.argmax(1).numpy()).mean()
    assert agree >= 0.999, agree


def test_toy_detector_backbone_and_neck(tmp_path, toy_images):
    module, norm = build_from_config(_config(DET), part='model')
    x = load_image(toy_images[1], (128, 160), norm)
    path = export_onnx(module, x, str(tmp_path / 'det.onnx'), dynamic=True, dynamo=True)
    runner = OnnxRunner(path)
    with torch.no_grad():
        expected = module(x)
    assert len(expected) == 5  # FPN P2-P6
    _assert_outputs_close(runner(x), expected)
    x = load_image(toy_images[1], (97, 131), norm)  # another, odd, size
    with torch.no_grad():
        expected = module(x)
    _assert_outputs_close(runner(x), expected)


def _run_tool(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, osp.join(REPO, 'tools/deployment/pytorch2onnx.py'),
                           *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_tool_exports_and_compares(tmp_path, toy_images):
    out = str(tmp_path / 'bb.onnx')
    open(out, 'w').close()  # replaced: --overwrite
    res = _run_tool(DET, '--part', 'backbone', '--shape', '64', '80', '--dynamic', '--legacy',
                    '--image', toy_images[1], '--out', out, '--benchmark', '--reps', '2',
                    '--overwrite')
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'onnx.checker: OK' in res.stdout
    diffs = [float(line.split('= ')[1].split()[0]) for line in res.stdout.splitlines()
             if 'max |onnxruntime - pytorch|' in line]
    assert len(diffs) == 4 and max(diffs) < 1e-3, res.stdout
    assert 'onnxruntime' in res.stdout.splitlines()[-1] and ' ms' in res.stdout
    assert osp.isfile(out)


@pytest.mark.parametrize('args,message', [
    (['--part', 'model', '--shape', '0', '64'], '--shape must be positive'),
    (['--part', 'model'], '--part model needs --shape H W'),
    (['--part', 'model', '--shape', '64', '64', '--image', 'no/such.jpg'],
     'image not found: no/such.jpg'),
    (['missing.pth', '--part', 'model', '--shape', '64', '64'],
     'checkpoint not found: missing.pth'),
    (['--part', 'model', '--shape', '40', '40', '--dynamic'], 'needs --shape of at least 65 65'),
])
def test_tool_bad_arguments(args, message):
    res = _run_tool(DET, *args)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert 'Traceback' not in out and message in out, out


def test_dynamic_dynamo_export_below_its_minimum_size_is_refused(tmp_path):
    """Failed before: a raw torch.export error from deep inside the exporter."""
    module = TensorModeModel(small_backbone(), 'backbone').eval()
    low = min_dynamic_size(module)
    with pytest.raises(ValueError, match=f'at least {low} x {low}'):
        export_onnx(module, torch.randn(1, 3, low - 1, 64), str(tmp_path / 'm.onnx'))
    assert not os.listdir(tmp_path)


def test_export_failing_its_checks_leaves_the_old_file(tmp_path, monkeypatch):
    """The file is written beside the target and renamed over it only after onnx.checker
    passed: a failed export neither truncates nor replaces what was there (failed before)."""
    path = tmp_path / 'model.onnx'
    path.write_text('precious')
    module = TensorModeModel(small_backbone(), 'backbone').eval()

    def refuse(*args, **kwargs):
        raise onnx.checker.ValidationError('planted')

    monkeypatch.setattr(onnx.checker, 'check_model', refuse)
    with pytest.raises(onnx.checker.ValidationError, match='planted'):
        export_onnx(module, torch.randn(1, 3, 64, 64), str(path), dynamic=False, dynamo=False)
    assert path.read_text() == 'precious'
    assert sorted(os.listdir(tmp_path)) == ['model.onnx']  # no partial file left
    monkeypatch.undo()
    export_onnx(module, torch.randn(1, 3, 64, 64), str(path), dynamic=False, dynamo=False)
    assert onnx.load(str(path)).graph.input[0].name == 'x'


def test_tool_refuses_to_overwrite_and_unfitting_checkpoints(tmp_path):
    """An existing --out is kept unless --overwrite; a checkpoint that does not fit the model
    is refused (failed before: exit 0, random weights exported and compared to themselves)."""
    out = tmp_path / 'keep.onnx'
    out.write_text('precious')
    res = _run_tool(SEG, '--part', 'backbone', '--shape', '64', '64', '--legacy',
                    '--out', str(out))
    assert res.returncode == 2 and f'{out} already exists: pass --overwrite' in res.stderr, \
        res.stdout + res.stderr
    assert out.read_text() == 'precious'
    junk = tmp_path / 'junk.pth'
    torch.save({'state_dict': {'foo.weight': torch.zeros(3)}}, junk)
    res = _run_tool(SEG, str(junk), '--part', 'backbone', '--shape', '64', '64', '--legacy',
                    '--out', str(tmp_path / 'new.onnx'))
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2 and 'Traceback' not in res.stderr, res.stdout + res.stderr
    assert f'checkpoint {junk} does not fit the model' in last and 'foo.weight' in last, last
    assert not (tmp_path / 'new.onnx').exists()


def test_tool_trust_checkpoint_and_new_out_folder(tmp_path):
    """A checkpoint that needs a full unpickle is refused with the flag to pass, and the flag
    exists (failed before: 'unrecognized arguments'); --out may name a folder to be made
    (failed before: README's work_dirs/onnx/ commands stopped at 'does not exist')."""
    import argparse
    module, _ = build_from_config(_config(SEG), part='model')
    ckpt = tmp_path / 'legacy.pth'
    torch.save({'state_dict': module.model.state_dict(), 'meta': argparse.Namespace(a=1)}, ckpt)
    out = tmp_path / 'new' / 'folder' / 'seg.onnx'
    args = ['--part', 'backbone', '--shape', '64', '64', '--legacy', '--out', str(out)]
    res = _run_tool(SEG, str(ckpt), *args)
    assert res.returncode == 2 and f'--trust-checkpoint {ckpt}' in res.stderr, res.stderr
    res = _run_tool(SEG, str(ckpt), *args, '--trust-checkpoint', str(ckpt))
    assert res.returncode == 0, res.stdout + res.stderr
    assert onnx.load(str(out)).graph.input[0].name == 'x'


def test_tool_fails_when_onnx_runtime_disagrees(tmp_path, monkeypatch, capsys):
    """The comparison is a check, not only a printout (failed before: exit 0 whatever the
    difference). An ONNX Runtime that returns the outputs shifted by 1 is caught."""
    import sys

    import mmelsa.deployment as deployment
    sys.path.insert(0, osp.join(REPO, 'tools', 'deployment'))
    import pytorch2onnx

    class Shifted(deployment.OnnxRunner):
        def __call__(self, x):
            return [o + 1.0 for o in super().__call__(x)]

    monkeypatch.setattr(deployment, 'OnnxRunner', Shifted)
    out = tmp_path / 'bb.onnx'
    with pytest.raises(SystemExit) as info:
        pytorch2onnx.main([SEG, '--part', 'backbone', '--shape', '64', '64', '--legacy',
                           '--out', str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and 'the export does not reproduce the model' in err, err
    assert f'nothing is written to {out}' in err and not out.exists()
    assert (tmp_path / 'bb.rejected.onnx').is_file()
    assert 'more than --rtol 0.001' in err


def test_tool_exports_a_classifier_whole(tmp_path):
    """An mmpretrain classifier: --part whole (the default) is its logits, by a plain export,
    checked in ONNX Runtime like the other parts."""
    out = tmp_path / 'cls.onnx'
    res = _run_tool(CLS, '--shape', '64', '64', '--legacy', '--out', str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'exported the classifier (logits)' in res.stdout, res.stdout
    (line, ) = [ln for ln in res.stdout.splitlines() if 'max |onnxruntime - pytorch|' in ln]
    assert line.startswith('output 0 (1, 3):'), line  # the toy's three classes
    assert float(line.split('= ')[1].split()[0]) < 1e-4
    assert onnx.load(str(out)).graph.input[0].name == 'x'
