"""Seeded generator for the embedded toy datasets.

Two tiny datasets let the whole train -> test loop run on a laptop CPU in minutes, with no
download:

* ``toy_coco``: COCO-format instance segmentation. Upright circles, squares and triangles of
  random colour and size on textured backgrounds; boxes, polygon masks, categories.
* ``toy_ade``: ADE20K-format semantic segmentation. A "wall" and a "floor" region with
  different textures plus the same three shapes. PNG labels hold class indices with 0 meaning
  "unlabelled" (a thin rim around every shape), so the configs load them with
  ``reduce_zero_label=True`` exactly as ADE20K's are.
* ``toy_cls``: ImageNet-format classification (mmpretrain's layout: ``{train,val}/`` images
  and ``meta/{train,val}.txt`` lists of ``file label``). One upright circle, square or triangle
  per image, of random colour and size, on the same textured backgrounds; the label is its
  shape.

Usage::

    python -m mmelsa.datasets.toy --out data/ [--kind det seg (default) | cls | all] [--seed 0]

Generation is deterministic for a given seed (every image draws from its own generator seeded
by ``(seed, split, index)``, so the train set does not change when the val size does), and
idempotent: a finished dataset carries a stamp file, and a second call with the same seed,
sizes and generator version does nothing. A ``toy_coco`` / ``toy_ade`` folder without the stamp
(not written by this generator) is never replaced unless ``--force`` is given.

Only numpy and OpenCV are used (both come with mmcv/mmengine), and importing this module does
not touch torch or the OpenMMLab registries.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import sys

import numpy as np

# Bump when the drawing code changes, so stale generated data is regenerated.
GENERATOR_VERSION = 6
STAMP = '.toy_dataset.json'

DET_CLASSES = ('circle', 'square', 'triangle')
# Label value k in the PNGs is SEG_CLASSES[k - 1]; 0 is unlabelled (ignored after
# reduce_zero_label), as in ADE20K.
SEG_CLASSES = ('wall', 'floor', 'circle', 'square', 'triangle')
DET_PALETTE = ((220, 20, 60), (0, 128, 255), (255, 200, 0))
SEG_PALETTE = ((120, 120, 120), (80, 50, 50), (220, 20, 60), (0, 128, 255), (255, 200, 0))

DET_SIZE = (160, 128)  # (width, height)
SEG_SIZE = (128, 128)
CLS_CLASSES = DET_CLASSES
CLS_SIZE = 64  # square images
SPLITS = (('train', 0), ('val', 1))


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - mmcv always brings OpenCV
        sys.exit('The toy data generator needs OpenCV (pip install opencv-python); it is '
                 'installed together with mmcv.')
    return cv2


# ----------------------------------------------------------------------------- drawing helpers
def _smooth_noise(rng, h, w, cells, cv2):
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.random((cells, cells)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out, 0.0, 1.0)


def _textured_background(rng, h, w, cv2):
    """A random-colour gradient with blotches, fine stripes and pixel noise.

    The texture is there so the detector cannot solve the task by thresholding a flat colour.
    """
    base = rng.uniform(40, 215, size=3)
    tint = rng.uniform(-50, 50, size=3)
    noise = _smooth_noise(rng, h, w, int(rng.integers(3, 7)), cv2)[..., None]
    img = base + tint * (noise - 0.5) * 2
    # Faint stripes at a random angle and period.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(6, 20)
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
    img = img + stripes[..., None] * rng.uniform(4, 14)
    img = img + rng.normal(0, 6, size=(h, w, 1))
    return img


def _contrasting_colour(rng, refs):
    """A random colour at least ~80 (L2 in RGB) away from every colour in ``refs`` (what lies
    under and around the object), so objects stay visible."""
    for _ in range(100):
        colour = rng.uniform(0, 255, size=3)
        if all(np.linalg.norm(colour - r) > 80 for r in refs):
            return colour
    return 255.0 - refs[0]


def _paint_shapes(rng, img, shapes, shading, cv2):
    """Paints ``shapes`` (from :func:`_place_shapes`) in drawing order, each in a colour that
    stands out from the background under it and from the shapes it overlaps, with a random
    low-frequency shading of relative strength ``shading``."""
    h, w = img.shape[:2]
    colours = []
    for i, (_, poly, mask) in enumerate(shapes):
        full = np.zeros((h, w), np.uint8)
        _fill(full, poly, 1, cv2)
        refs = [img[full.astype(bool)].mean(axis=0)]
        grown = cv2.dilate(full, np.ones((5, 5), np.uint8)).astype(bool)
        refs += [c for (_, _, m), c in zip(shapes[:i], colours) if (grown & (m > 0)).any()]
        colours.append(_contrasting_colour(rng, refs))
    for (_, _, mask), colour in zip(shapes, colours):
        paint = colour
        if shading:
            paint = colour * (1 + shading * (_smooth_noise(rng, h, w, 3, cv2)[..., None] - 0.5))
        img = np.where(mask[..., None].astype(bool), paint, img)
    return img


def _shape_polygon(kind, cx, cy, size):
    """Vertices (N, 2) float of an upright shape with the given centre and size.

    ``size`` is a circle's diameter and a square's side; a triangle (equilateral, apex up) gets
    a circumradius of ``0.6 * size`` so that its area is close to the square's and it is not
    the smallest thing in the picture.

    Squares and triangles are drawn upright, not at random angles (generator v6): measured
    on single-shape crops of this generator, a small CNN trained from scratch for 300 batches
    of 32 tells the three shapes apart with 92% accuracy when they are upright, 62% when
    turned by up to 15 degrees and 49% at any angle; the toy models have no budget to learn
    rotation invariance in a few minutes. Colours, sizes, overlaps and backgrounds stay random.
    """
    if kind == 'circle':
        # 32 vertices: the polygon stored in the annotation and the drawn disk agree to a
        # fraction of a pixel at these sizes.
        n, r, first = 32, size / 2.0, 0.0
    elif kind == 'square':
        n, r, first = 4, size / np.sqrt(2.0), np.pi / 4
    else:  # triangle, apex up (image y grows downwards)
        n, r, first = 3, 0.6 * size, -np.pi / 2
    ang = first + np.arange(n) * 2 * np.pi / n
    return np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], axis=1)


def _fill(mask_or_img, poly, value, cv2):
    # COCO puts pixel (i, j) at [j, j+1] x [i, i+1]; OpenCV centres it on (j, i). Shift by half
    # a pixel so the rasterised mask is the annotated polygon's in COCO's convention.
    # 4 fractional bits keep the vertices sub-pixel.
    pts = np.round((poly - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(mask_or_img, [pts], value, lineType=cv2.LINE_8, shift=4)


def _grown_outline(poly, h, w, cv2):
    """The polygon's pixels and a 1-pixel ring around them."""
    full = np.zeros((h, w), np.uint8)
    _fill(full, poly, 1, cv2)
    return cv2.dilate(full, np.ones((3, 3), np.uint8))


def _place_shapes(rng, h, w, n, min_size, max_size, cv2, max_hidden=0.3, margin=2):
    """Places up to ``n`` shapes, later ones on top; returns (kind_index, polygon, visible mask)
    triples in drawing order.

    Shapes may overlap, but a placement is refused if it would hide more than ``max_hidden``
    of any shape below it (or of itself, by the image border): every object stays
    recognisable, and the visible masks are exact (no occlusion guesswork in the labels).
    """
    shapes = []
    for _ in range(n * 30):
        if len(shapes) == n:
            break
        kind = int(rng.integers(len(DET_CLASSES)))
        size = rng.uniform(min_size, max_size)
        poly = _shape_polygon(DET_CLASSES[kind], 0.0, 0.0, size)
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        if (hi - lo > np.array([w, h]) - 2 * margin).any():
            continue
        # Centre such that the whole polygon lies inside the image (with a margin).
        cx = rng.uniform(margin - lo[0], w - margin - hi[0])
        cy = rng.uniform(margin - lo[1], h - margin - hi[1])
        poly = poly + np.array([cx, cy])
        mask = np.zeros((h, w), np.uint8)
        _fill(mask, poly, 1, cv2)
        if mask.sum() < 60:
            continue
        keep = [m & (1 - mask) for _, _, m in shapes]
        if any(k.sum() < (1 - max_hidden) * m.sum() for k, (_, _, m) in zip(keep, shapes)):
            continue
        # A shape that lies inside another would leave a hole in the other's visible part,
        # which a COCO polygon cannot describe: a cover must reach outside what it covers.
        if any((m & mask).any() and not (mask & (1 - _grown_outline(p, h, w, cv2))).any()
               for _, p, m in shapes):
            continue
        shapes = [(kd, p, k) for k, (kd, p, _) in zip(keep, shapes)]
        shapes.append((kind, poly, mask))
    return shapes


def _visible_annotation(kind_poly_mask, cv2):
    """COCO polygons, area and box (x0, y0, x1, y1) of a shape's visible part.

    A fully visible shape keeps its own polygon and the polygon's tight box. A partly covered
    one is outlined from its visible pixels (specks under 4 pixels left out): the outline is
    traced at twice the resolution, so it runs a quarter pixel inside the pixel edges instead
    of through the pixel centres.
    """
    _, poly, mask = kind_poly_mask
    full = np.zeros_like(mask)
    _fill(full, poly, 1, cv2)
    if (full == mask).all():
        (x0, y0), (x1, y1) = poly.min(axis=0), poly.max(axis=0)
        return [poly], float(mask.sum()), (x0, y0, x1, y1)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask)
    kept = np.isin(comp, [j for j in range(1, n) if stats[j, cv2.CC_STAT_AREA] >= 4])
    big = cv2.resize(kept.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [(c.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0 for c in contours if len(c) >= 3]
    ys, xs = np.nonzero(kept)
    return polys, float(kept.sum()), (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def _finish(img):
    return np.clip(img, 0, 255).astype(np.uint8)[..., ::-1]  # RGB -> BGR for cv2.imwrite


# ----------------------------------------------------------------------------- datasets
def _stamp_matches(root, meta):
    path = osp.join(root, STAMP)
    if not osp.isfile(path):
        return False
    try:
        with open(path) as f:
            return json.load(f) == meta
    except (OSError, ValueError):
        return False


def _write_stamp(root, meta):
    with open(osp.join(root, STAMP), 'w') as f:
        json.dump(meta, f, indent=1, sort_keys=True)


def _up_to_date_or_claim(root, meta, force):
    """True when ``root`` already holds this dataset. Otherwise empties ``root`` for a new
    one, but only a folder this generator wrote (it holds the stamp; written first as
    incomplete, so an interrupted run still owns it) or an empty one, unless ``force``."""
    if not force and _stamp_matches(root, meta):
        print(f'{osp.basename(root)}: up to date in {root} (seed {meta["seed"]}), nothing to do')
        return True
    if (osp.isdir(root) and os.listdir(root) and not osp.isfile(osp.join(root, STAMP))
            and not force):
        raise FileExistsError(
            f'{root} holds files that mmelsa.datasets.toy did not write (it has no {STAMP}): '
            'not replacing them. Move them away, choose another --out, or pass --force to '
            'replace the folder.')
    if osp.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    _write_stamp(root, dict(meta, complete=False))  # replaced by ``meta`` once complete
    return False


def generate_toy_coco(out_root, seed=0, num_train=600, num_val=50, force=False):
    """Writes ``<out_root>/toy_coco`` and returns its path.

    Layout (the same as COCO's, so mmdet's ``CocoDataset`` reads it unchanged)::

        toy_coco/annotations/instances_{train,val}.json
        toy_coco/{train,val}/000000.jpg ...
    """
    cv2 = _cv2()
    root = osp.join(out_root, 'toy_coco')
    meta = dict(kind='det', version=GENERATOR_VERSION, seed=seed, num_train=num_train,
                num_val=num_val, classes=list(DET_CLASSES))
    if _up_to_date_or_claim(root, meta, force):
        return root
    os.makedirs(osp.join(root, 'annotations'))
    w, h = DET_SIZE
    categories = [dict(id=i + 1, name=n, supercategory='shape') for i, n in enumerate(DET_CLASSES)]
    counts = dict(train=num_train, val=num_val)
    for split, split_id in SPLITS:
        os.makedirs(osp.join(root, split))
        images, anns = [], []
        for idx in range(counts[split]):
            rng = np.random.default_rng([seed, split_id, idx])
            img = _textured_background(rng, h, w, cv2)
            # 2-5 objects of 30-60 px, overlapping at times: several positives per image, and
            # shapes large enough that the small from-scratch model tells them apart.
            shapes = _place_shapes(rng, h, w, int(rng.integers(2, 6)), 30, 60, cv2)
            img = _paint_shapes(rng, img, shapes, 0.15, cv2)
            img = img + rng.normal(0, 3, size=img.shape)  # sensor noise over everything
            file_name = f'{idx:06d}.jpg'
            cv2.imwrite(osp.join(root, split, file_name), _finish(img),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            image_id = idx + 1
            images.append(dict(id=image_id, file_name=file_name, width=w, height=h))
            for shape in shapes:
                polys, area, (x0, y0, x1, y1) = _visible_annotation(shape, cv2)
                anns.append(dict(
                    id=len(anns) + 1, image_id=image_id, category_id=shape[0] + 1,
                    bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                    area=area,
                    segmentation=[[round(float(v), 2) for v in p.reshape(-1)] for p in polys],
                    iscrowd=0))
        coco = dict(info=dict(description='mmelsa toy COCO-format shapes', version=str(
            GENERATOR_VERSION), seed=seed), licenses=[], images=images, annotations=anns,
            categories=categories)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
        print(f'toy_coco/{split}: {len(images)} images, {len(anns)} instances')
    _write_stamp(root, meta)  # last, so an interrupted run is redone next time
    return root


def _region_texture(rng, h, w, vertical, cv2):
    """Wall: vertical stripes; floor: a checkerboard. Random colours, so the class is told by
    texture and position, not by a fixed colour."""
    base = rng.uniform(30, 225, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(6, 14)
    amp = rng.uniform(15, 35)
    if vertical:
        pattern = np.sign(np.sin(xx * 2 * np.pi / period))
    else:
        pattern = np.sign(np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period))
    img = base + amp * pattern[..., None]
    img = img + 20 * (_smooth_noise(rng, h, w, 4, cv2)[..., None] - 0.5)
    return img


def generate_toy_ade(out_root, seed=0, num_train=600, num_val=50, force=False):
    """Writes ``<out_root>/toy_ade`` and returns its path.

    Layout (ADEChallengeData2016's)::

        toy_ade/images/{training,validation}/000000.jpg
        toy_ade/annotations/{training,validation}/000000.png   (uint8 class indices, 0 = none)
    """
    cv2 = _cv2()
    root = osp.join(out_root, 'toy_ade')
    meta = dict(kind='seg', version=GENERATOR_VERSION, seed=seed, num_train=num_train,
                num_val=num_val, classes=list(SEG_CLASSES))
    if _up_to_date_or_claim(root, meta, force):
        return root
    w, h = SEG_SIZE
    counts = dict(train=num_train, val=num_val)
    for (split, split_id), folder in zip(SPLITS, ('training', 'validation')):
        img_dir = osp.join(root, 'images', folder)
        ann_dir = osp.join(root, 'annotations', folder)
        os.makedirs(img_dir)
        os.makedirs(ann_dir)
        for idx in range(counts[split]):
            # Offset the split id so seg images are not the det images' random streams.
            rng = np.random.default_rng([seed, 10 + split_id, idx])
            # Horizon: a tilted line between 30% and 70% of the height.
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            y_left, y_right = rng.uniform(0.3 * h, 0.7 * h, size=2)
            below = yy > y_left + (y_right - y_left) * xx / (w - 1)
            wall = _region_texture(rng, h, w, True, cv2)
            floor = _region_texture(rng, h, w, False, cv2)
            img = np.where(below[..., None], floor, wall)
            label = np.where(below, 2, 1).astype(np.uint8)
            shapes = _place_shapes(rng, h, w, int(rng.integers(2, 6)), 28, 56, cv2)
            img = _paint_shapes(rng, img, shapes, 0.0, cv2)
            for kind, _, mask in shapes:
                label[mask.astype(bool)] = 3 + kind
            for _, _, mask in shapes:
                # A 1-pixel unlabelled rim, like ADE20K's unannotated object borders.
                rim = cv2.dilate(mask, np.ones((3, 3), np.uint8)) - cv2.erode(
                    mask, np.ones((3, 3), np.uint8))
                label[rim.astype(bool)] = 0
            img = img + rng.normal(0, 4, size=img.shape)
            cv2.imwrite(osp.join(img_dir, f'{idx:06d}.jpg'), _finish(img),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(osp.join(ann_dir, f'{idx:06d}.png'), label)
        print(f'toy_ade/{folder}: {counts[split]} images')
    _write_stamp(root, meta)
    return root


def generate_toy_cls(out_root, seed=0, num_train=12000, num_val=300, force=False):
    """Writes ``<out_root>/toy_cls`` and returns its path.

    Layout (mmpretrain's ImageNet layout, so its ``ImageNet`` / ``CustomDataset`` read it)::

        toy_cls/{train,val}/000000.png ...
        toy_cls/meta/{train,val}.txt      lines "000000.png <class index>"

    Each image holds one shape of 24-44 px, its label the shape (:data:`CLS_CLASSES`); the
    classes are drawn in turn, so every split is balanced. Many more images than the other sets
    (they are small: 12000 take about 17 s and 143 MB): a transformer trained from scratch on 600
    of them learns them by heart and generalises to about 40%, on 3000 it stops near 85% however
    long it trains; more images, not more epochs, bring it past 90% (docs/benchmarks.md, "Toy
    classifier").
    """
    cv2 = _cv2()
    root = osp.join(out_root, 'toy_cls')
    meta = dict(kind='cls', version=GENERATOR_VERSION, seed=seed, num_train=num_train,
                num_val=num_val, classes=list(CLS_CLASSES))
    if _up_to_date_or_claim(root, meta, force):
        return root
    os.makedirs(osp.join(root, 'meta'))
    h = w = CLS_SIZE
    counts = dict(train=num_train, val=num_val)
    for split, split_id in SPLITS:
        os.makedirs(osp.join(root, split))
        lines = []
        for idx in range(counts[split]):
            # split_id + 2: other streams than the detection set's images of the same index
            rng = np.random.default_rng([seed, split_id + 2, idx])
            kind = idx % len(CLS_CLASSES)
            img = _textured_background(rng, h, w, cv2)
            size = rng.uniform(24, 44)
            poly = _shape_polygon(CLS_CLASSES[kind], 0.0, 0.0, size)
            lo, hi = poly.min(axis=0), poly.max(axis=0)
            centre = rng.uniform(2 - lo, np.array([w, h]) - 2 - hi)
            poly = poly + centre
            mask = np.zeros((h, w), np.uint8)
            _fill(mask, poly, 1, cv2)
            img = _paint_shapes(rng, img, [(kind, poly, mask)], 0.15, cv2)
            img = img + rng.normal(0, 3, size=img.shape)
            file_name = f'{idx:06d}.png'
            cv2.imwrite(osp.join(root, split, file_name), _finish(img))
            lines.append(f'{file_name} {kind}')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        print(f'toy_cls/{split}: {len(lines)} images')
    _write_stamp(root, meta)
    return root


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Generate the embedded toy datasets (COCO-format shapes for detection, '
                    'ADE20K-format scenes for segmentation, an ImageNet-layout shape set for '
                    'classification).')
    p.add_argument('--out', default='data', help='parent folder (default: data)')
    p.add_argument('--kind', nargs='+', choices=('det', 'seg', 'cls', 'all'),
                   default=['det', 'seg'],
                   help='the sets to make, one or more (default: det seg, the main job\'s; the '
                   'classification set is 12000 images, about 145 MB: ask for cls or all)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--num-train', type=int, default=None,
                   help='training images per set (default: 600 det / seg, 12000 cls)')
    p.add_argument('--num-val', type=int, default=None,
                   help='validation images per set (default: 50 det / seg, 300 cls)')
    p.add_argument('--force', action='store_true',
                   help='regenerate even if up to date, and replace a toy_coco / toy_ade / '
                   'toy_cls folder that this generator did not write')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    kw = dict(seed=args.seed, force=args.force)
    for name, value in (('num_train', args.num_train), ('num_val', args.num_val)):
        if value is not None:  # else each generator's own default
            kw[name] = value
    kinds = {'det', 'seg', 'cls'} if 'all' in args.kind else set(args.kind)
    try:
        if 'det' in kinds:
            generate_toy_coco(args.out, **kw)
        if 'seg' in kinds:
            generate_toy_ade(args.out, **kw)
        if 'cls' in kinds:
            generate_toy_cls(args.out, **kw)
    except FileExistsError as err:
        sys.stderr.write(f'error: {err}\n')
        sys.exit(2)


if __name__ == '__main__':
    main()
