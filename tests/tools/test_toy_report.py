"""tools/analysis_tools/toy_report.py: the per-class figures it computes from saved predictions,
its pictures, and the hook that gives the untrained model's metric (fast, no training)."""
import json
import os.path as osp
import sys
import types

import numpy as np
import pytest

from .conftest import TOOLS

sys.path.insert(0, osp.join(TOOLS, 'analysis_tools'))
import toy_report  # noqa: E402


def test_seg_iou_counts_like_mmseg(tmp_path):
    """Label value k is class k - 1, 0 is ignored; IoU = TP / (TP + FP + FN) per class."""
    import cv2
    gt = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]], np.uint8)
    pred = np.array([[1, 1, 2, 1], [1, 1, 2, 2], [3, 2, 3, 3], [3, 3, 3, 3]], np.uint8)
    cv2.imwrite(str(tmp_path / 'gt.png'), gt)
    cv2.imwrite(str(tmp_path / 'pred.png'), pred)
    iou, acc = toy_report.seg_iou([str(tmp_path / 'gt.png')], [str(tmp_path / 'pred.png')], 4)
    # class 0 (label 1): 4 right, 1 false positive; class 1 (label 2): 3 right, 1 missed, 1 FP;
    # class 2 (label 3): 3 right, 1 missed; class 3: absent everywhere -> NaN (not 0)
    np.testing.assert_allclose(iou[:3], [100 * 4 / 5, 100 * 3 / 5, 100 * 3 / 4])
    assert np.isnan(iou[3])
    assert acc == pytest.approx(100 * 10 / 12)  # the 4 unlabelled pixels do not count


def _ground_truth_as_predictions(gt_file, drop_class=None):
    import pycocotools.mask as mask_util
    with open(gt_file) as f:
        coco = json.load(f)
    preds = {}
    for im in coco['images']:
        anns = [a for a in coco['annotations'] if a['image_id'] == im['id']
                and a['category_id'] - 1 != drop_class]
        boxes = [[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                  a['bbox'][1] + a['bbox'][3]] for a in anns]
        masks = [mask_util.merge(mask_util.frPyObjects(a['segmentation'], im['height'],
                                                       im['width'])) for a in anns]
        preds[im['id']] = dict(bboxes=np.array(boxes).reshape(-1, 4), scores=np.ones(len(anns)),
                               labels=np.array([a['category_id'] - 1 for a in anns]),
                               masks=masks)
    return preds


def test_coco_per_class(tmp_path):
    from mmelsa.datasets import toy
    root = toy.generate_toy_coco(str(tmp_path), seed=0, num_train=1, num_val=6)
    gt_file = osp.join(root, 'annotations', 'instances_val.json')
    perfect = toy_report.coco_per_class(gt_file, _ground_truth_as_predictions(gt_file))
    for t in ('bbox', 'segm'):
        assert perfect[t]['mAP'] == pytest.approx(1.0)
        assert perfect[t]['per_class'] == pytest.approx({n: 1.0 for n in toy.DET_CLASSES})
    no_squares = toy_report.coco_per_class(gt_file, _ground_truth_as_predictions(gt_file, 1))
    assert no_squares['bbox']['per_class']['square'] == 0.0
    assert no_squares['bbox']['per_class']['circle'] == pytest.approx(1.0)
    assert no_squares['segm']['mAP'] == pytest.approx(2 / 3)
    nothing = toy_report.coco_per_class(gt_file, {})
    assert nothing['bbox']['mAP'] == 0.0


def test_pictures_are_upscaled_side_by_side(tmp_path):
    img = np.zeros((20, 30, 3), np.uint8)
    left = toy_report._draw_instances(img, [[2, 2, 12, 12]], [0], [None], ['circle'],
                                      [(255, 0, 0)], 3)
    assert left.shape == (60, 90, 3) and (left[36, 6:36] == (0, 0, 255)).all()  # BGR
    pair = toy_report._side_by_side([left, left])
    out = toy_report.overview([pair] * 3, str(tmp_path / 'grid.png'), columns=2)
    import cv2
    grid = cv2.imread(out)
    assert grid.shape[1] == 2 * pair.shape[1] + 10 and grid.shape[0] == 2 * pair.shape[0] + 10


def test_validate_before_train_hook_runs_once_at_the_start():
    from mmelsa.engine.hooks import ValidateBeforeTrainHook
    calls = []
    runner = types.SimpleNamespace(iter=0, val_loop=types.SimpleNamespace(
        run=lambda: calls.append('val')))
    hook = ValidateBeforeTrainHook()
    hook.before_train(runner)
    assert calls == ['val']
    runner.iter = 30  # a resumed run already has its first point
    hook.before_train(runner)
    runner.iter, runner.val_loop = 0, None  # no validation configured: nothing to do
    hook.before_train(runner)
    assert calls == ['val']


class _RunsCode:
    """Unpickling this calls os.system: what a doctored predictions file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f'touch {self.marker}', )


def test_predictions_file_cannot_run_code(tmp_path):
    """The --pred file is unpickled with an allowlist: real predictions load, a pickle that
    calls os.system is refused (naming the file and the global) and nothing runs."""
    import pickle

    import torch
    good = tmp_path / 'pred.pkl'
    with open(good, 'wb') as f:
        pickle.dump([dict(img_id=3, pred_instances=dict(
            bboxes=torch.tensor([[1., 2., 3., 4.]]), scores=torch.tensor([0.9]),
            labels=torch.tensor([2])))], f)
    preds = toy_report._load_det_predictions(str(good))
    np.testing.assert_array_equal(preds[3]['bboxes'], [[1., 2., 3., 4.]])
    assert preds[3]['labels'].tolist() == [2]

    marker = tmp_path / 'ran'
    bad = tmp_path / 'bad.pkl'
    with open(bad, 'wb') as f:
        pickle.dump([dict(img_id=0, pred_instances=_RunsCode(str(marker)))], f)
    with pytest.raises(pickle.UnpicklingError, match=r'bad\.pkl.*(posix|os)\.system'):
        toy_report._load_det_predictions(str(bad))
    assert not marker.exists()


def test_table_names_each_run_by_its_folder(tmp_path, capsys):
    """Two classifiers (run_toy.sh's cls and ddf tasks) are both of kind 'cls': the table tells
    them apart by folder, each with its own time."""
    dirs = []
    for name, top1 in (('cls', 93.7), ('ddf', 100.0)):
        wd = tmp_path / name
        wd.mkdir()
        summary = dict(task='cls', metrics={'accuracy/top1': top1},
                       untrained={'accuracy/top1': 34.3}, per_class={},
                       overview='o.png', curves='c.png', pictures='vis')
        (wd / 'summary.json').write_text(json.dumps(summary))
        dirs.append(str(wd))
    times = tmp_path / 'times.txt'
    times.write_text('data 5\ntrain cls 300\ntest cls 7\ntrain ddf 600\ntest ddf 8\n')
    toy_report.main(['table', *dirs, '--times', str(times)])
    rows = [r.split() for r in capsys.readouterr().out.splitlines()
            if r.startswith(('cls ', 'ddf '))]
    assert [(r[0], r[2], r[-2]) for r in rows] == [('cls', '93.7', '307'),
                                                  ('ddf', '100.0', '608')]
