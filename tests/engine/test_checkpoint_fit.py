"""Weights that do not load never pass as loaded: checked by value, on every path that builds a
model from weights (mmelsa's tools, the Runner, mmengine's Inferencers, mmdet's
``init_detector``, mmseg's ``init_model``, mmpretrain's ``get_model`` and its Inferencer, the
ONNX export), with BatchNorm's ``num_batches_tracked`` the one key that may be missing.

Each test failed before: a value that is not a tensor passed the key-and-shape check (mmengine
then logged "expected torch.Tensor" and ran the random weights), the OpenMMLab functions accepted
another model's weights with a warning, and a complete file without ``num_batches_tracked`` was
refused.
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

import mmelsa  # noqa: F401
from mmelsa.checkpoint import CheckpointMismatchError, check_checkpoint_fits

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py'
SEG = 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py'
CLS = 'configs/toy/elsa-swin-toy_1xb32-8e_toy-cls-64px.py'


class _Model(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)


@pytest.mark.parametrize('value,what', [
    (lambda t: t.numpy(), 'numpy.ndarray'),
    (lambda t: torch.empty(t.shape, device='meta'), 'meta tensor'),
    (lambda t: 3, 'builtins.int'),
    (lambda t: t.long(), 'torch.int64 for a torch.float32'),
    (lambda t: t.tolist(), 'builtins.list'),
])
def test_values_that_are_not_weights_are_refused(value, what):
    model = _Model()
    sd = dict(model.state_dict())
    sd['conv.weight'] = value(sd['conv.weight'])
    for allow_partial in (False, True):  # the opt-in relaxes names and shapes, not values
        with pytest.raises(CheckpointMismatchError, match=what) as info:
            check_checkpoint_fits(model, sd, 'f.pth', allow_partial=allow_partial)
        assert 'conv.weight' in str(info.value) and '\n' not in str(info.value)


def test_num_batches_tracked_may_be_missing_nothing_else():
    model = _Model()
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}
    check_checkpoint_fits(model, sd, 'f.pth')  # refused before
    del sd['bn.running_var']
    with pytest.raises(CheckpointMismatchError, match='bn.running_var'):
        check_checkpoint_fits(model, sd, 'f.pth')


def _build(config):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(osp.join(REPO, config))
    init_default_scope(cfg.default_scope)
    return cfg, MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def seg_files(tmp_path_factory):
    """The toy segmenter's own weights, and three files that do not load into it."""
    root = tmp_path_factory.mktemp('seg')
    _, model = _build(SEG)
    sd = model.state_dict()
    torch.save({'state_dict': sd, 'meta': {}}, root / 'fits.pth')
    key = next(k for k in sd if k.startswith('decode_head') and k.endswith('weight'))
    torch.save({'state_dict': {**sd, key: 0}}, root / 'int_value.pth')
    torch.save({'state_dict': {k: v for k, v in sd.items() if 'num_batches_tracked' not in k}},
               root / 'no_num_batches_tracked.pth')
    torch.save({'state_dict': {'backbone.foo': torch.zeros(3)}}, root / 'other.pth')
    return root


def _test_tool(args):
    return subprocess.run([sys.executable, 'tools/test.py', *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=REPO))


def test_test_tool_refuses_a_value_that_is_not_a_weight(seg_files, tmp_path, toy_root):
    """tools/test.py with one weight stored as a number: exit 2 and one line naming it (before:
    mmengine logged "expected torch.Tensor" and the metric of random weights came out, exit 0);
    --allow-partial-load does not let it through."""
    from tests.tools.conftest import toy_data_options
    data = ['--cfg-options', *toy_data_options('seg', toy_root)]
    for extra in ([], ['--allow-partial-load']):
        res = _test_tool([SEG, str(seg_files / 'int_value.pth'), '--work-dir',
                          str(tmp_path / 'w'), *extra, *data])
        assert res.returncode == 2, res.stderr[-3000:]
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith('error: ') and 'builtins.int, not a tensor' in last, last


def test_runner_loads_a_file_without_num_batches_tracked(seg_files):
    from mmengine.config import Config

    from mmelsa.engine import SafeRunner
    cfg = Config.fromfile(osp.join(REPO, SEG))
    cfg.work_dir = str(seg_files / 'runner')
    runner = SafeRunner.from_cfg(cfg)
    runner.load_checkpoint(str(seg_files / 'no_num_batches_tracked.pth'))  # refused before
    saved = torch.load(seg_files / 'fits.pth')['state_dict']
    for key, value in runner.model.state_dict().items():
        if 'num_batches_tracked' not in key:
            torch.testing.assert_close(value, saved[key], rtol=0, atol=0)


def test_init_model_and_init_detector_refuse_other_weights(seg_files, tmp_path):
    from mmseg.apis import init_model
    with pytest.raises(CheckpointMismatchError, match='other.pth does not fit'):
        init_model(osp.join(REPO, SEG), str(seg_files / 'other.pth'), device='cpu')
    model = init_model(osp.join(REPO, SEG), str(seg_files / 'fits.pth'), device='cpu')
    saved = torch.load(seg_files / 'fits.pth')['state_dict']
    torch.testing.assert_close(model.state_dict()[next(iter(saved))], saved[next(iter(saved))])

    from mmdet.apis import init_detector
    with pytest.raises(CheckpointMismatchError, match='other.pth does not fit'):
        init_detector(osp.join(REPO, DET), str(seg_files / 'other.pth'), device='cpu')


def test_mmpretrain_get_model_and_inferencer_refuse_other_weights(seg_files, monkeypatch):
    from mmpretrain import ImageClassificationInferencer, get_model
    with pytest.raises(CheckpointMismatchError, match='does not fit'):
        get_model(osp.join(REPO, CLS), pretrained=str(seg_files / 'other.pth'))
    with pytest.raises(CheckpointMismatchError, match='does not fit'):
        ImageClassificationInferencer(osp.join(REPO, CLS),
                                      pretrained=str(seg_files / 'other.pth'), device='cpu')
    # the opt-in for API calls, which read no config option
    monkeypatch.setenv('MMELSA_ALLOW_PARTIAL_LOAD', '1')
    get_model(osp.join(REPO, CLS), pretrained=str(seg_files / 'other.pth'))


def test_pretrained_init_still_takes_what_fits(tmp_path):
    """mmengine's ``init_cfg=dict(type='Pretrained')`` loads a classifier's file into a backbone
    (extra head keys) by design: not refused."""
    from mmengine.model import BaseModule

    class Net(BaseModule):

        def __init__(self, init_cfg):
            super().__init__(init_cfg)
            self.conv = torch.nn.Conv2d(3, 4, 3)

    weights = {'conv.weight': torch.ones(4, 3, 3, 3), 'conv.bias': torch.zeros(4),
               'fc.weight': torch.zeros(10, 4)}
    torch.save(weights, tmp_path / 'cls.pth')
    net = Net(dict(type='Pretrained', checkpoint=str(tmp_path / 'cls.pth')))
    net.init_weights()
    assert torch.equal(net.conv.weight, weights['conv.weight'])


def test_numpy_weights_in_a_trusted_file_are_refused(tmp_path, monkeypatch):
    """A trusted file is unpickled whole; its values are still checked when they become weights."""
    from mmengine.runner import load_checkpoint
    model = _Model()
    sd = {k: (v.numpy() if k == 'conv.weight' else v) for k, v in model.state_dict().items()}
    torch.save({'state_dict': sd}, tmp_path / 'np.pth')
    monkeypatch.setenv('MMELSA_TRUSTED_CHECKPOINTS', str(tmp_path / 'np.pth'))
    with pytest.raises(CheckpointMismatchError, match='numpy.ndarray, not a tensor'):
        load_checkpoint(model, str(tmp_path / 'np.pth'))


def test_whole_model_export_refuses_other_weights(seg_files, tmp_path, toy_root):
    """``pytorch2onnx.py`` with ``--part whole`` (the default) loads the weights through MMDeploy:
    checked there too (before: no fit check at all), and nothing is written at ``--out``."""
    image = sorted((p for p in os.scandir(osp.join(toy_root, 'toy_coco', 'val'))
                    if p.name.endswith('.jpg')), key=lambda p: p.name)[0].path
    out = tmp_path / 'det.onnx'
    res = subprocess.run(
        [sys.executable, 'tools/deployment/pytorch2onnx.py', DET, str(seg_files / 'other.pth'),
         '--image', image, '--out', str(out)], cwd=REPO, capture_output=True, text=True,
        timeout=900, env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode == 2, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'other.pth does not fit' in last, last
    assert not out.exists() and os.listdir(tmp_path) == []
