"""The whole toy Mask R-CNN, trained (a short schedule, with tools/train.py), converted with
MMDeploy and compared with PyTorch on the validation images, all detections, rank by rank;
then the README's command on the trained checkpoint.

A trained detector's low-scoring detections are where MMDeploy's post-processing differed from
mmdet's (failed before on 4 of 4 images: from the 3rd to 11th detection on, boxes up to 114 px
apart and other labels: MMDeploy gave every class of an RoI the box of its top class). Random
weights with well separated scores did not show it.
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmelsa.deployment.mmdeploy_export import build_models, mmdeploy_convert
from mmelsa.deployment.whole_model import match_detections

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = osp.join(REPO, 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py')
DET_DEPLOY = osp.join(REPO, 'configs/mmdeploy/instance-seg_onnxruntime_dynamic.py')


def _env():
    return dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'),
                PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(checkpoint, validation images): the toy detector after 60 iterations (2 epochs of 120
    images, batch 4; about 2.5 min of CPU): scores up to about 0.25 with near-ties, several
    classes scored on one object, as a detector early in training has."""
    from mmelsa.datasets.toy import generate_toy_coco
    root = str(tmp_path_factory.mktemp('trained'))
    data = generate_toy_coco(root, seed=0, num_train=120, num_val=4) + '/'
    work = osp.join(root, 'work')
    ann = data + 'annotations/instances_val.json'
    options = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=100', 'custom_hooks=[]',
               'default_hooks.checkpoint.interval=2', f'val_evaluator.ann_file={ann}',
               f'test_evaluator.ann_file={ann}'] + [
                   f'{split}_dataloader.dataset.data_root={data}'
                   for split in ('train', 'val', 'test')]
    res = subprocess.run([sys.executable, osp.join(REPO, 'tools/train.py'), DET, '--work-dir',
                          work, '--cfg-options', *options], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    val = osp.join(data, 'val')
    return osp.join(work, 'epoch_2.pth'), [osp.join(val, f) for f in sorted(os.listdir(val))]


def test_trained_mask_rcnn_matches_pytorch(tmp_path, trained):
    ckpt, images = trained
    assert len(images) >= 3
    onnx_file = mmdeploy_convert(DET, DET_DEPLOY, ckpt, images[0], str(tmp_path))
    processor, pytorch_model, ort_model = build_models(DET, DET_DEPLOY, ckpt, onnx_file)
    for image in images:
        data, _ = processor.create_input(image, None)
        with torch.no_grad():
            expected = pytorch_model.test_step(data)[0].pred_instances
            got = ort_model.test_step(data)[0].pred_instances
        assert len(expected) == len(got) > 0
        # every detection, in order (no exact near-ties here); the tool's check too
        torch.testing.assert_close(got.bboxes, expected.bboxes, rtol=0, atol=1e-3)
        torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=1e-4)
        assert torch.equal(got.labels, expected.labels), (expected.labels, got.labels)
        m_got, m_exp = got.masks.bool(), expected.masks.bool()
        inter, union = (m_got & m_exp).flatten(1).sum(1), (m_got | m_exp).flatten(1).sum(1)
        iou = torch.where(union > 0, inter / union.clamp(min=1), 1.)
        assert iou.min() >= 0.99, iou
        pairs, missing, extra = match_detections(expected, got)
        assert not missing and not extra and len(pairs) > 0


def test_readme_command_on_the_trained_detector(tmp_path, trained):
    """README's headline command with a trained checkpoint (failed before: exit 2, 'does not
    reproduce the model')."""
    ckpt, images = trained
    out = tmp_path / 'det.onnx'
    res = subprocess.run([sys.executable, osp.join(REPO, 'tools/deployment/pytorch2onnx.py'),
                          DET, ckpt, '--image', images[1], '--out', str(out)], cwd=REPO,
                         env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "0 of pytorch's and 0 of onnxruntime's without a match" in res.stdout, res.stdout
    assert 'matched one to one (same label, box IoU >= 0.5' in res.stdout
    assert out.is_file() and sorted(os.listdir(tmp_path)) == ['det.onnx']
