"""The toy classification set (mmelsa.datasets.toy.generate_toy_cls): mmpretrain's ImageNet
layout, balanced labels that name the drawn shape, determinism and idempotence."""
import os
import os.path as osp

import numpy as np

from mmelsa.datasets import toy


def _read(root, split):
    with open(osp.join(root, 'meta', f'{split}.txt')) as f:
        return [line.split() for line in f.read().splitlines()]


def test_layout_labels_and_shapes(tmp_path):
    import cv2
    root = toy.generate_toy_cls(str(tmp_path), seed=1, num_train=9, num_val=6)
    for split, n in (('train', 9), ('val', 6)):
        rows = _read(root, split)
        assert len(rows) == n and sorted(os.listdir(osp.join(root, split))) == \
            sorted(r[0] for r in rows)
        labels = [int(r[1]) for r in rows]
        assert np.bincount(labels, minlength=3).tolist() == [n // 3] * 3
        for name, label in rows:
            img = cv2.imread(osp.join(root, split, name))
            assert img.shape == (toy.CLS_SIZE, toy.CLS_SIZE, 3)
    # The label is the shape: a square fills its bounding box, a circle about pi/4 of it and
    # a triangle about half; measured on a drawing of the generator's own polygon.
    fill = {}
    for k, kind in enumerate(toy.CLS_CLASSES):
        mask = np.zeros((64, 64), np.uint8)
        toy._fill(mask, toy._shape_polygon(kind, 32.0, 32.0, 30.0), 1, cv2)
        ys, xs = np.nonzero(mask)
        fill[k] = mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
    assert fill[1] > 0.95 and 0.72 < fill[0] < 0.85 and 0.4 < fill[2] < 0.6


def test_deterministic_and_idempotent(tmp_path, capsys):
    a = toy.generate_toy_cls(str(tmp_path / 'a'), seed=2, num_train=3, num_val=3)
    b = toy.generate_toy_cls(str(tmp_path / 'b'), seed=2, num_train=3, num_val=3)
    for split in ('train', 'val'):
        for name in os.listdir(osp.join(a, split)):
            with open(osp.join(a, split, name), 'rb') as fa, \
                    open(osp.join(b, split, name), 'rb') as fb:
                assert fa.read() == fb.read()
    toy.generate_toy_cls(str(tmp_path / 'a'), seed=2, num_train=3, num_val=3)
    assert 'up to date' in capsys.readouterr().out
