"""A bare ``torch.onnx.export`` of DDF: the DDFPack layer (both exporters, dynamic batch and
size) and a whole DDF-ResNet-50 classifier, checked in ONNX Runtime against PyTorch eager at the
export size and at other, odd, sizes. While exporting, the operator computes itself in standard
ops (per-sample ghosts included), so nothing needs registering."""
import os.path as osp

import pytest
import torch
from mmengine import Config

from mmelsa.deployment import OnnxRunner, TensorModeModel
from mmelsa.models.ddf import DDFPack
from mmelsa.ops.reference import max_rel_err

from .test_plain_export import EXPORTERS, assert_standard_onnx

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOL = 1e-4


@pytest.mark.parametrize('dynamo', EXPORTERS)
@pytest.mark.parametrize('combine', ['mul', 'add'])
def test_bare_export_of_a_ddf_pack(tmp_path, combine, dynamo):
    torch.manual_seed(0)
    pack = DDFPack(16, stride=2, head=2, kernel_combine=combine).eval()
    x = torch.randn(2, 16, 12, 10)
    path = str(tmp_path / 'ddf.onnx')
    if dynamo:
        auto = torch.export.Dim.AUTO
        torch.onnx.export(pack, (x, ), path, dynamo=True, opset_version=17,
                          dynamic_shapes={'x': {0: auto, 2: auto, 3: auto}})
    else:
        torch.onnx.export(pack, (x, ), path, dynamo=False, opset_version=17,
                          input_names=['x'], dynamic_axes={'x': {0: 'b', 2: 'h', 3: 'w'}})
    assert_standard_onnx(path, 17, dynamo)
    runner = OnnxRunner(path)
    for shape in [(2, 16, 12, 10), (1, 16, 9, 13), (3, 16, 7, 5)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = pack(x)
        got = torch.from_numpy(runner(x)[0])
        assert got.shape == expected.shape
        assert max_rel_err(got, expected) < TOL, shape


def test_whole_ddf_resnet50_exports_and_agrees(tmp_path):
    import mmelsa  # noqa: F401  (registers DDFResNet)
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'ddf_resnet',
                                   'ddf-mul-resnet50_8xb128-120e_in1k.py'))
    torch.manual_seed(0)
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # whatever a test before set
        model = TensorModeModel(MODELS.build(cfg.model), 'model').eval()  # (logits, )
    path = str(tmp_path / 'ddf_resnet50.onnx')
    torch.onnx.export(model, (torch.randn(1, 3, 64, 64), ), path, dynamo=False, opset_version=17,
                      input_names=['x'], dynamic_axes={'x': {0: 'b', 2: 'h', 3: 'w'}})
    assert_standard_onnx(path, 17, False)
    runner = OnnxRunner(path)
    for shape in [(1, 3, 64, 64), (2, 3, 75, 91)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected, = model(x)
        got = torch.from_numpy(runner(x)[0])
        assert got.shape == expected.shape == (shape[0], 1000)
        assert max_rel_err(got, expected) < TOL, shape
