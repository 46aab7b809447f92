"""The embedded toy data generator: formats, determinism, idempotence (no mmdet needed)."""
import json
import os
import os.path as osp

import numpy as np
import pytest

from mmelsa.datasets import toy


def _files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = osp.join(d, n)
            with open(p, 'rb') as f:
                out[osp.relpath(p, root)] = f.read()
    return out


def test_coco_format(tmp_path):
    root = toy.generate_toy_coco(str(tmp_path), seed=3, num_train=12, num_val=4)
    import cv2
    for split, n in (('train', 12), ('val', 4)):
        with open(osp.join(root, 'annotations', f'instances_{split}.json')) as f:
            coco = json.load(f)
        assert len(coco['images']) == n
        assert [c['name'] for c in coco['categories']] == list(toy.DET_CLASSES)
        ids = {im['id'] for im in coco['images']}
        assert coco['annotations'], 'every split has instances'
        for ann in coco['annotations']:
            assert ann['image_id'] in ids and ann['category_id'] in (1, 2, 3)
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= toy.DET_SIZE[0] and y + h <= toy.DET_SIZE[1]
            pts = np.concatenate([np.array(p).reshape(-1, 2) for p in ann['segmentation']])
            # The box is the (visible) outline's extent: tight for a fully visible shape (its
            # own polygon), within a pixel for a partly covered one (its pixels' outline).
            tol = 0.02 if len(ann['segmentation']) == 1 and len(pts) in (3, 4, 32) else 1.0
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            assert (lo >= (x - 0.02, y - 0.02)).all()
            assert (hi <= (x + w + 0.02, y + h + 0.02)).all()
            assert (np.abs(lo - (x, y)) < tol).all() and (np.abs(hi - (x + w, y + h)) < tol).all()
            assert ann['area'] > 0 and ann['iscrowd'] == 0
        img = cv2.imread(osp.join(root, split, coco['images'][0]['file_name']))
        assert img.shape == (toy.DET_SIZE[1], toy.DET_SIZE[0], 3)


def test_coco_loads_with_pycocotools(tmp_path):
    import pycocotools.coco as pycoco
    root = toy.generate_toy_coco(str(tmp_path), seed=0, num_train=4, num_val=2)
    coco = pycoco.COCO(osp.join(root, 'annotations', 'instances_val.json'))
    # pycocotools rasterises the polygon nearly as the generator drew it (the two
    # rasterisers differ on boundary pixels only)
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)
        assert abs(int(mask.sum()) - ann['area']) <= 0.15 * ann['area'] + 8


def test_coco_overlaps_keep_objects_visible(tmp_path):
    """Objects may overlap; an annotation is the visible part only (masks of one image do
    not share pixels), and no object loses more than the generator's limit of its area."""
    import pycocotools.coco as pycoco
    root = toy.generate_toy_coco(str(tmp_path), seed=0, num_train=1, num_val=30)
    coco = pycoco.COCO(osp.join(root, 'annotations', 'instances_val.json'))
    overlapping = occluded = 0
    for img_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        for i in range(len(anns)):
            occluded += len(anns[i]['segmentation']) > 1 or len(anns[i]['segmentation'][0]) \
                not in (6, 8, 64)
            for j in range(i + 1, len(anns)):
                (xa, ya, wa, ha), (xb, yb, wb, hb) = anns[i]['bbox'], anns[j]['bbox']
                overlapping += xa < xb + wb and xb < xa + wa and ya < yb + hb and yb < ya + ha
                # boundary pixels aside (two rasterisers), the visible parts are disjoint
                shared = (masks[i] & masks[j]).sum()
                assert shared <= 0.1 * min(masks[i].sum(), masks[j].sum()), (img_id, i, j)
    assert overlapping > 0 and occluded > 0, 'the set has overlapping objects'
    for ann in coco.loadAnns(coco.getAnnIds()):
        w, h = ann['bbox'][2:]
        assert ann['area'] >= 60 and min(w, h) >= 6  # still a recognisable object


def test_ade_format(tmp_path):
    import cv2
    root = toy.generate_toy_ade(str(tmp_path), seed=1, num_train=6, num_val=3)
    for folder, n in (('training', 6), ('validation', 3)):
        imgs = sorted(os.listdir(osp.join(root, 'images', folder)))
        anns = sorted(os.listdir(osp.join(root, 'annotations', folder)))
        assert len(imgs) == n and [a[:-4] for a in anns] == [i[:-4] for i in imgs]
        seen = set()
        for a in anns:
            label = cv2.imread(osp.join(root, 'annotations', folder, a), cv2.IMREAD_UNCHANGED)
            assert label.dtype == np.uint8 and label.ndim == 2
            assert label.max() <= len(toy.SEG_CLASSES)
            seen |= set(np.unique(label).tolist())
        # 0 (unlabelled, ignored after reduce_zero_label), wall, floor and shapes all occur
        assert {0, 1, 2} <= seen and seen & {3, 4, 5}


def test_deterministic_and_idempotent(tmp_path, capsys):
    a = toy.generate_toy_coco(str(tmp_path / 'a'), seed=7, num_train=5, num_val=2)
    b = toy.generate_toy_coco(str(tmp_path / 'b'), seed=7, num_train=5, num_val=2)
    assert _files(a) == _files(b)
    mtime = os.path.getmtime(osp.join(a, 'train', '000000.jpg'))
    capsys.readouterr()
    toy.generate_toy_coco(str(tmp_path / 'a'), seed=7, num_train=5, num_val=2)
    assert 'nothing to do' in capsys.readouterr().out
    assert os.path.getmtime(osp.join(a, 'train', '000000.jpg')) == mtime
    # Another seed regenerates, and gives other pictures.
    toy.generate_toy_coco(str(tmp_path / 'a'), seed=8, num_train=5, num_val=2)
    assert _files(a) != _files(b)


def test_cli(tmp_path):
    toy.main(['--out', str(tmp_path), '--kind', 'seg', '--num-train', '2', '--num-val', '1'])
    assert osp.isdir(tmp_path / 'toy_ade' / 'images' / 'training')
    assert not osp.exists(tmp_path / 'toy_coco')


def test_cli_makes_several_kinds_in_one_call(tmp_path):
    """``--kind det cls`` (run_toy.sh passes its task list): those two sets, not the third."""
    toy.main(['--out', str(tmp_path), '--kind', 'det', 'cls', '--num-train', '3',
              '--num-val', '3'])
    assert osp.isfile(tmp_path / 'toy_coco' / 'annotations' / 'instances_val.json')
    assert osp.isfile(tmp_path / 'toy_cls' / 'meta' / 'val.txt')
    assert not osp.exists(tmp_path / 'toy_ade')


def test_a_folder_it_did_not_write_is_kept(tmp_path, capsys):
    """toy_coco / toy_ade folders without the generator's stamp hold someone else's files:
    refused unless --force (failed before: deleted); an interrupted run's folder (stamped
    incomplete first) is still regenerated."""
    for kind, name in (('det', 'toy_coco'), ('seg', 'toy_ade')):
        mine = tmp_path / name / 'my_notes.json'
        mine.parent.mkdir()
        mine.write_text('precious')
        args = ['--out', str(tmp_path), '--kind', kind, '--num-train', '2', '--num-val', '1']
        with pytest.raises(SystemExit) as info:
            toy.main(args)
        err = capsys.readouterr().err
        assert info.value.code == 2 and f'{tmp_path / name} holds files' in err, err
        assert '--force' in err and mine.read_text() == 'precious'
        toy.main(args + ['--force'])
        assert not mine.exists() and osp.isfile(tmp_path / name / toy.STAMP)
    # a run killed half-way leaves its stamp marked incomplete: the next run redoes it
    root = toy.generate_toy_coco(str(tmp_path / 'k'), seed=1, num_train=2, num_val=1)
    with open(osp.join(root, toy.STAMP)) as f:
        meta = json.load(f)
    with open(osp.join(root, toy.STAMP), 'w') as f:
        json.dump(dict(meta, complete=False), f)
    os.remove(osp.join(root, 'val', '000000.jpg'))
    toy.generate_toy_coco(str(tmp_path / 'k'), seed=1, num_train=2, num_val=1)
    assert osp.isfile(osp.join(root, 'val', '000000.jpg'))
