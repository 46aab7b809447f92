"""pytorch2onnx.py --out is written only as a whole and only once everything passed, for every
--part: a failed conversion or a failed comparison (exit 2) with --overwrite leaves the file that
was there byte for byte, and nothing planted beside --out (a symlink at a temporary name, or at
--out itself) is written through."""
import os
import os.path as osp

import onnx
import pytest
import torch

import mmelsa  # noqa: F401
import mmelsa.deployment as deployment
import mmelsa.deployment.whole_model as whole_model
from mmelsa.deployment import TensorModeModel, export_onnx
from mmelsa.models import ELSASwinTransformer

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = osp.join(REPO, 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py')
SEG = osp.join(REPO, 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py')
CLS = osp.join(REPO, 'configs/toy/elsa-swin-toy_1xb32-8e_toy-cls-64px.py')
OLD = b'the ONNX file of an earlier export, which only a checked one may replace'
VICTIM = b'a file outside the output folder that no export may write'
# (config, --part) of the plain exports: a backbone, a detector's (backbone + neck) and a
# classifier's model (its --part whole is this plain export too)
PLAIN_PARTS = [(SEG, 'backbone'), (DET, 'model'), (CLS, 'model')]


@pytest.fixture
def tool(monkeypatch):
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools', 'deployment'))
    import pytorch2onnx
    return pytorch2onnx


def _plain_args(config, part, out):
    return [config, '--part', part, '--shape', '64', '64', '--legacy', '--out', str(out),
            '--overwrite']


def _run(tool, argv):
    """The tool's exit status (0 when main returns)."""
    try:
        tool.main(argv)
    except SystemExit as done:
        return done.code
    return 0


def _old_out(tmp_path):
    out = tmp_path / 'out' / 'model.onnx'
    out.parent.mkdir()
    out.write_bytes(OLD)
    return out


def _victim(tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    victim = outside / 'victim.onnx'
    victim.write_bytes(VICTIM)
    return victim


@pytest.mark.parametrize('config,part', PLAIN_PARTS)
def test_failed_comparison_keeps_the_old_file(tool, tmp_path, monkeypatch, capsys, config,
                                              part):
    """ONNX Runtime disagrees (its outputs shifted by 1): exit 2 and --out is the old file.
    Failed before: the new file had replaced it before the comparison."""
    class Shifted(deployment.OnnxRunner):
        def __call__(self, x):
            return [o + 1.0 for o in super().__call__(x)]

    monkeypatch.setattr(deployment, 'OnnxRunner', Shifted)
    out = _old_out(tmp_path)
    assert _run(tool, _plain_args(config, part, out)) == 2
    assert out.read_bytes() == OLD
    # the temporary is gone; the file that failed is kept beside it, under its own name
    assert sorted(os.listdir(out.parent)) == ['model.onnx', 'model.rejected.onnx']
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'does not reproduce the model' in err and f'{out} is left as it was' in err, err


@pytest.mark.parametrize('config,part', PLAIN_PARTS)
def test_failed_conversion_keeps_the_old_file(tool, tmp_path, monkeypatch, config, part):
    """The exporter writes half a file and fails: exit 2, --out is the old file."""
    def half_then_fail(module, args, f, *a, **kw):
        with open(f, 'wb') as half:
            half.write(b'half an onnx file')
        raise RuntimeError('planted exporter failure')

    monkeypatch.setattr(torch.onnx, 'export', half_then_fail)
    out = _old_out(tmp_path)
    assert _run(tool, _plain_args(config, part, out)) == 2
    assert out.read_bytes() == OLD
    assert os.listdir(out.parent) == ['model.onnx']


@pytest.mark.parametrize('config,part', PLAIN_PARTS[:1])
def test_successful_export_replaces_a_symlink_at_out(tool, tmp_path, config, part):
    """--out is a symlink to a file elsewhere: --overwrite replaces the link, not its target."""
    victim = _victim(tmp_path)
    out = tmp_path / 'out' / 'model.onnx'
    out.parent.mkdir()
    os.symlink(victim, out)
    assert _run(tool, _plain_args(config, part, out)) == 0
    assert victim.read_bytes() == VICTIM
    assert not out.is_symlink() and onnx.load(str(out)).graph.input[0].name == 'x'


def test_symlink_at_the_temporary_name_is_not_followed(tool, tmp_path):
    """A symlink planted at the temporary name export_onnx used (``.NAME.<pid>.partial.onnx``,
    predictable) points outside. Failed before: the exporter wrote the model into its target."""
    victim = _victim(tmp_path)
    out = tmp_path / 'out' / 'model.onnx'
    out.parent.mkdir()
    link = out.parent / f'.model.onnx.{os.getpid()}.partial.onnx'
    os.symlink(victim, link)
    assert _run(tool, _plain_args(SEG, 'backbone', out)) == 0
    assert victim.read_bytes() == VICTIM
    assert link.is_symlink() and onnx.load(str(out)).graph.input[0].name == 'x'
    # export_onnx alone, likewise
    torch.manual_seed(0)
    backbone = ELSASwinTransformer(embed_dims=8, depths=(1, 1), num_heads=(1, 2), group_width=4,
                                   elsa_kernel_size=3, window_size=4, strides=(4, 2),
                                   out_indices=(1, ), elsa_stages=(0, )).eval()
    path = export_onnx(TensorModeModel(backbone, 'backbone'), torch.randn(1, 3, 32, 32),
                       str(out), dynamic=False, dynamo=False)
    assert victim.read_bytes() == VICTIM
    assert sorted(os.listdir(out.parent)) == sorted([link.name, 'model.onnx'])
    assert onnx.load(path).graph.input[0].name == 'x'


# --part whole: MMDeploy's conversion (tests/deployment/test_mmdeploy.py runs it for real) is
# replaced by one that writes the file it is given, as the real one does on success


@pytest.fixture
def image(tmp_path):
    path = tmp_path / 'image.jpg'
    path.write_bytes(b'not read: the conversion is replaced')
    return str(path)


def _fake_conversion(monkeypatch, problems=(), fail=False):
    def convert(model_cfg, deploy_cfg, checkpoint, image, out):
        os.makedirs(osp.dirname(out), exist_ok=True)
        with open(out, 'wb') as f:
            f.write(b'a converted model')
        if fail:
            raise RuntimeError('planted conversion failure')
        return None, None, None, None

    monkeypatch.setattr(whole_model, 'convert_whole_model', convert)
    monkeypatch.setattr(whole_model, 'agreement', lambda *a, **kw: (['compared'], list(problems)))


@pytest.mark.parametrize('failure', ['comparison', 'conversion'])
def test_whole_failure_keeps_the_old_file(tool, tmp_path, monkeypatch, image, failure):
    """Failed before (comparison): the converted file had replaced --out before the
    comparison failed."""
    _fake_conversion(monkeypatch, problems=['planted disagreement'],
                     fail=failure == 'conversion')
    out = _old_out(tmp_path)
    assert _run(tool, [DET, '--image', image, '--out', str(out), '--overwrite']) == 2
    assert out.read_bytes() == OLD
    assert sorted(os.listdir(out.parent)) == (
        ['model.onnx', 'model.rejected.onnx'] if failure == 'comparison' else ['model.onnx'])


def test_whole_success_replaces_a_symlink_at_out(tool, tmp_path, monkeypatch, image):
    _fake_conversion(monkeypatch)
    victim = _victim(tmp_path)
    out = tmp_path / 'out' / 'model.onnx'
    out.parent.mkdir()
    os.symlink(victim, out)
    assert _run(tool, [DET, '--image', image, '--out', str(out), '--overwrite']) == 0
    assert victim.read_bytes() == VICTIM
    assert not out.is_symlink() and out.read_bytes() == b'a converted model'
    assert os.listdir(out.parent) == ['model.onnx']


def test_failed_comparison_without_an_earlier_file_leaves_nothing_at_out(tool, tmp_path,
                                                                         monkeypatch, image,
                                                                         capsys):
    """A file that does not reproduce the model is never at --out (before: it was, when no
    file was there): it is kept as OUT.rejected.onnx, to be looked at, and the error names
    it."""
    _fake_conversion(monkeypatch, problems=['planted disagreement'])
    out = tmp_path / 'new' / 'model.onnx'
    rejected = tmp_path / 'new' / 'model.rejected.onnx'
    assert _run(tool, [DET, '--image', image, '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert 'the export does not reproduce the model: planted disagreement' in err, err
    assert f'nothing is written to {out}, the file is kept as {rejected}' in err, err
    assert not osp.lexists(out)
    assert rejected.read_bytes() == b'a converted model'
    assert os.listdir(out.parent) == ['model.rejected.onnx']


def test_whole_segmenter_real_conversion_failed_comparison_keeps_the_old_file(
        tool, tmp_path, monkeypatch, capsys):
    """The real MMDeploy conversion of the toy segmenter, with an ONNX Runtime whose logits are
    shifted channel-wise: exit 2 and --out is the old file (failed before: replaced)."""
    import numpy as np

    from mmelsa.datasets.toy import generate_toy_ade

    class Rolled(whole_model.OnnxRunner):
        def __call__(self, x):
            return [np.roll(o, 1, axis=1) for o in super().__call__(x)]

    ade = generate_toy_ade(str(tmp_path / 'toy'), seed=0, num_train=1, num_val=1)
    val = osp.join(ade, 'images', 'validation')
    image = osp.join(val, sorted(os.listdir(val))[0])
    monkeypatch.setattr(whole_model, 'OnnxRunner', Rolled)
    out = _old_out(tmp_path)
    assert _run(tool, [SEG, '--image', image, '--out', str(out), '--overwrite']) == 2
    assert out.read_bytes() == OLD
    assert sorted(os.listdir(out.parent)) == ['model.onnx', 'model.rejected.onnx']
    err = capsys.readouterr().err
    assert 'does not reproduce the model: argmax agreement' in err, err
