"""Whole toy models converted with MMDeploy to ONNX Runtime and compared with PyTorch on toy
images: the Mask R-CNN (dynamic shapes; boxes, scores, labels, masks) and the UPerNet (static
192 x 192; argmax of the raw logits). Plus the compatibility module's checks against the
installed MMDeploy, which fail when MMDeploy changes what the patches are for.

mmdeploy / onnxruntime are imported plainly: without them these tests fail, they never skip.
"""
import inspect
import os
import os.path as osp

import mmdeploy  # noqa: F401  (a missing install must fail here)
import numpy as np
import onnx
import pytest
import torch
from mmengine.config import Config

from mmelsa.deployment import mmdeploy_compat as compat
from mmelsa.deployment.mmdeploy_export import build_models, mmdeploy_convert

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = osp.join(REPO, 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py')
SEG = osp.join(REPO, 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py')
CASCADE = osp.join(REPO, 'configs/elsa_swin/'
                   'cascade-mask-rcnn_elsa-swin-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-1x_coco.py')
DET_DEPLOY = osp.join(REPO, 'configs/mmdeploy/instance-seg_onnxruntime_dynamic.py')
SEG_DEPLOY = osp.join(REPO, 'configs/mmdeploy/segmentation_onnxruntime_static-192x192.py')


def test_compat_knows_the_installed_mmdeploy():
    """What the patches are for is still there; fails when MMDeploy changes (then revisit
    mmelsa/deployment/mmdeploy_compat.py)."""
    import importlib
    onnx_export = importlib.import_module('mmdeploy.apis.onnx.export')
    roi_align = importlib.import_module('mmdeploy.mmcv.ops.roi_align')
    assert mmdeploy.__version__ in compat.TESTED_MMDEPLOY
    call = inspect.getsource(onnx_export)
    assert 'torch.onnx.export(' in call and 'dynamo' not in call
    assert 'from torch.onnx.symbolic_opset9 import _cast_Long' in inspect.getsource(roi_align)
    import torch.onnx.symbolic_opset9 as opset9
    assert not hasattr(opset9, '_cast_Long')  # still gone from torch: the shim is needed
    export = torch.onnx.export
    with compat.mmdeploy_compat():
        assert callable(opset9._cast_Long) and torch.onnx.export is not export
    assert not hasattr(opset9, '_cast_Long') and torch.onnx.export is export  # undone


def test_compat_refuses_unknown_mmdeploy(monkeypatch):
    monkeypatch.setattr(mmdeploy, '__version__', '9.9.9')
    with pytest.raises(RuntimeError, match='knows MMDeploy 1.3.1, found 9.9.9'):
        with compat.mmdeploy_compat():
            pass


def test_static_segmenter_size_is_checked():
    cfg = Config.fromfile(SEG)
    compat.check_static_segmenter_size(cfg, (192, 384))
    with pytest.raises(ValueError, match='input height 128 must be a multiple of 192'):
        compat.check_static_segmenter_size(cfg, (128, 192))


@pytest.fixture(scope='module')
def toy_images(tmp_path_factory):
    from mmelsa.datasets.toy import generate_toy_ade, generate_toy_coco
    root = str(tmp_path_factory.mktemp('toy'))
    ade = generate_toy_ade(root, seed=0, num_train=1, num_val=2)
    coco = generate_toy_coco(root, seed=0, num_train=1, num_val=2)
    ade_val, coco_val = osp.join(ade, 'images', 'validation'), osp.join(coco, 'val')
    return ([osp.join(ade_val, f) for f in sorted(os.listdir(ade_val))],
            [osp.join(coco_val, f) for f in sorted(os.listdir(coco_val))])


def _random_checkpoint(cfg, path, spread_scores):
    """The config's initialisation, saved; with ``spread_scores`` the classifiers get
    weights of std 0.5 so that detection scores are well apart (at their initialisation all
    are about equal, and the order of near-ties is not a property of the export)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import mmelsa  # noqa: F401
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    state = model.state_dict()
    if spread_scores:
        gen = torch.Generator().manual_seed(1)
        for key in state:
            if 'fc_cls' in key or 'rpn_cls' in key:
                state[key] = torch.randn(state[key].shape, generator=gen) * 0.5
    torch.save({'state_dict': state}, path)
    return str(path)


def _assert_standard_graph(path, opset):
    proto = onnx.load(path)
    assert {n.domain for n in proto.graph.node} <= {'', 'ai.onnx'}
    assert {o.domain: o.version for o in proto.opset_import}[''] == opset


def test_mask_rcnn_matches_pytorch(tmp_path, toy_images):
    ckpt = _random_checkpoint(Config.fromfile(DET), tmp_path / 'det.pth', spread_scores=True)
    onnx_file = mmdeploy_convert(DET, DET_DEPLOY, ckpt, toy_images[1][0], str(tmp_path))
    _assert_standard_graph(onnx_file, 11)
    processor, pytorch_model, ort_model = build_models(DET, DET_DEPLOY, ckpt, onnx_file)
    for image in toy_images[1]:  # 128 x 160, the traced image first
        data, _ = processor.create_input(image, None)
        with torch.no_grad():
            expected = pytorch_model.test_step(data)[0].pred_instances
            got = ort_model.test_step(data)[0].pred_instances
        assert len(expected) == len(got) == 20  # the config's max_per_img
        # The last places may differ: MMDeploy's RPN keeps zero-size proposals and suppresses
        # across pyramid levels, mmdet's drops them and suppresses per level.
        _assert_leading_detections_agree(expected, got, top=15)


def _assert_leading_detections_agree(expected, got, top, min_iou=0.99):
    torch.testing.assert_close(got.bboxes[:top], expected.bboxes[:top], rtol=0, atol=1e-3)
    torch.testing.assert_close(got.scores[:top], expected.scores[:top], rtol=0, atol=1e-4)
    assert torch.equal(got.labels[:top], expected.labels[:top])
    m_got, m_exp = got.masks[:top].bool(), expected.masks[:top].bool()
    assert m_got.shape == m_exp.shape
    inter, union = (m_got & m_exp).flatten(1).sum(1), (m_got | m_exp).flatten(1).sum(1)
    iou = torch.where(union > 0, inter / union.clamp(min=1), 1.)  # both empty: agree
    assert iou.min() >= min_iou, iou


def _small_cascade():
    """Our Cascade Mask R-CNN config (class-specific 4conv1fc GIoU box heads) with a
    one-block-per-stage ELSA-Swin and toy-sized test images, so that it converts in seconds."""
    cfg = Config.fromfile(CASCADE)
    cfg.model.backbone.update(embed_dims=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                              init_cfg=None)
    cfg.model.neck.in_channels = [32, 64, 128, 256]
    # No suppression among the proposals: MMDeploy's RPN suppresses across pyramid levels and
    # mmdet's per level, and here, where every stage re-scores each box, a proposal kept by one
    # and not the other can reach the leading detections. The RoI stages are what is compared.
    cfg.model.test_cfg.rpn.nms.iou_threshold = 1.0
    for pipeline in (cfg.test_pipeline, cfg.test_dataloader.dataset.pipeline):
        for step in pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (160, 128)
    return cfg


def test_cascade_with_class_specific_heads_matches_pytorch(tmp_path, toy_images):
    """MMDeploy's cascade rewriter asserts class-agnostic regression before the last stage;
    our Cascade configs regress per class (failed before: AssertionError in MMDeploy's
    cascade_roi_head__predict_bbox)."""
    cfg = _small_cascade()
    assert not any(head.reg_class_agnostic for head in cfg.model.roi_head.bbox_head)
    ckpt = _random_checkpoint(cfg, tmp_path / 'cascade.pth', spread_scores=True)
    onnx_file = mmdeploy_convert(cfg, DET_DEPLOY, ckpt, toy_images[1][0], str(tmp_path))
    _assert_standard_graph(onnx_file, 11)
    processor, pytorch_model, ort_model = build_models(cfg, DET_DEPLOY, ckpt, onnx_file)
    for image in toy_images[1]:
        data, _ = processor.create_input(image, None)
        with torch.no_grad():
            expected = pytorch_model.test_step(data)[0].pred_instances
            got = ort_model.test_step(data)[0].pred_instances
        assert len(expected) >= 15 and len(got) >= 15
        # masks: the mean of three random mask heads sits near the 0.5 threshold on many
        # pixels, where float32 rounding flips a few
        _assert_leading_detections_agree(expected, got, top=10, min_iou=0.98)
    # nothing of the rewriter stays registered after the conversion
    from mmdeploy.core import FUNCTION_REWRITER
    assert all(rec['_object'] is not compat._cascade_predict_bbox
               for recs in FUNCTION_REWRITER._registry._rewrite_records.values()
               for rec in recs)


def test_upernet_matches_pytorch(tmp_path, toy_images):
    ckpt = _random_checkpoint(Config.fromfile(SEG), tmp_path / 'seg.pth', spread_scores=False)
    onnx_file = mmdeploy_convert(SEG, SEG_DEPLOY, ckpt, toy_images[0][0], str(tmp_path))
    _assert_standard_graph(onnx_file, 11)
    processor, pytorch_model, ort_model = build_models(SEG, SEG_DEPLOY, ckpt, onnx_file)
    import onnxruntime as ort
    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    for image in toy_images[0]:
        data, _ = processor.create_input(image, (192, 192))
        x = pytorch_model.data_preprocessor(data, False)['inputs']
        assert tuple(x.shape) == (1, 3, 192, 192)
        with torch.no_grad():
            # raw logits (1/4 of the input), resized to the input as mmseg's decode head
            # predicts (what MMDeploy's graph returns)
            expected = torch.nn.functional.interpolate(
                pytorch_model(x, mode='tensor'), size=x.shape[2:], mode='bilinear',
                align_corners=pytorch_model.decode_head.align_corners)
        (got, ) = session.run(None, {'input': x.numpy()})
        assert got.shape == tuple(expected.shape)
        agree = float((got.argmax(1) == expected.argmax(1).numpy()).mean())
        assert agree >= 0.999, agree
        assert np.abs(got - expected.numpy()).max() <= 1e-3 * float(expected.abs().max())


def _run_tool(*args):
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, osp.join(REPO, 'tools/deployment/pytorch2onnx.py'),
                           *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_tool_converts_the_whole_detector_and_compares(tmp_path, toy_images):
    ckpt = _random_checkpoint(Config.fromfile(DET), tmp_path / 'det.pth', spread_scores=True)
    onnx_file = tmp_path / 'w' / 'det.onnx'  # a new folder
    res = _run_tool(DET, ckpt, '--image', toy_images[1][0], '--out', str(onnx_file),
                    '--benchmark', '--reps', '1')
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert 'detections: pytorch 20, onnxruntime 20; compared: those scoring >= 0.05' in out, out
    assert "0 of pytorch's and 0 of onnxruntime's without a match" in out, out
    box = float(out.split('max |box diff| ')[1].split()[0])
    iou = float(out.split('mask IoU of the pairs: min ')[1].split(',')[0])
    assert box < 1e-3 and iou >= 0.99, out
    assert 'onnxruntime' in out.splitlines()[-1] and ' ms' in out.splitlines()[-1]
    assert os.listdir(tmp_path / 'w') == ['det.onnx']  # nothing left over


@pytest.mark.parametrize('args,message', [
    (['--image', 'no/such.jpg'], 'image not found: no/such.jpg'),
    ([], '--part whole needs --image'),
    (['--image', DET, '--dynamic'], '--dynamic is for --part model / backbone'),
    (['--image', DET, '--deploy-cfg', 'no/such.py'], '--deploy-cfg not found: no/such.py'),
])
def test_tool_bad_arguments(tmp_path, args, message):
    res = _run_tool(DET, *args, '--out', str(tmp_path / 'x.onnx'))
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert 'Traceback' not in res.stderr


def test_tool_whole_segmenter_shape_is_checked(tmp_path, toy_images):
    res = _run_tool(SEG, '--image', toy_images[0][0], '--shape', '128', '192', '--out',
                    str(tmp_path / 'seg.onnx'))
    assert res.returncode == 2, res.stdout + res.stderr
    assert 'input height 128 must be a multiple of 192' in res.stderr, res.stderr
    assert os.listdir(tmp_path) == []  # no file, no temporary folder left


def test_tool_fails_when_onnx_runtime_disagrees(tmp_path, toy_images, monkeypatch, capsys):
    """The whole-model comparison is a check too: an ONNX Runtime segmenter whose logits are
    shifted channel-wise is refused, exit 2: nothing at --out, the file it wrote kept as
    seg.rejected.onnx (it converted; before: kept at --out)."""
    import sys

    import mmelsa.deployment.whole_model as whole_model
    sys.path.insert(0, osp.join(REPO, 'tools', 'deployment'))
    import pytorch2onnx

    class Rolled(whole_model.OnnxRunner):
        def __call__(self, x):
            return [np.roll(o, 1, axis=1) for o in super().__call__(x)]

    monkeypatch.setattr(whole_model, 'OnnxRunner', Rolled)
    out = tmp_path / 'seg.onnx'
    with pytest.raises(SystemExit) as info:
        pytorch2onnx.main([SEG, '--image', toy_images[0][0], '--out', str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and 'does not reproduce the model: argmax agreement' in err
    assert f'nothing is written to {out}' in err and not out.exists()
    assert (tmp_path / 'seg.rejected.onnx').is_file()


def test_tool_segmenter_without_checkpoint(tmp_path, toy_images):
    """Without a checkpoint the conversion and the comparison use one initialisation (failed
    before: each drew its own random weights, argmax agreement 2.6%)."""
    res = _run_tool(SEG, '--image', toy_images[0][0], '--out', str(tmp_path / 'seg.onnx'))
    assert res.returncode == 0, res.stdout + res.stderr
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith('logits (1, 5, 192, 192): argmax agreement'), res.stdout
    assert float(line.split('argmax agreement ')[1].split('%')[0]) >= 99.9, line
