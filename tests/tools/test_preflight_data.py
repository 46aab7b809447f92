"""Pre-flight refuses bad data in one line naming the file and the record (in process).

Each test builds its own small dataset in ``tmp_path`` (a COCO json with two images, an
ADE20K-style image / label-map pair folder, an mmpretrain list file), damages one record or one
image and calls :func:`mmelsa.cli.preflight.check_datasets` as tools/train.py and tools/test.py
do. Before these checks, every case here passed the pre-flight and failed later: a wrong metric
(NaN boxes score bbox mAP 0.5 for an untrained model), a traceback from pycocotools or the data
loader (often after the whole inference), or gigabytes of memory (a decompression bomb).
"""
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mmelsa.cli import preflight

NAN = float('nan')


# ------------------------------------------------------------------------------ data makers
def _jpeg(path, size=(32, 24), seed=0):
    """Noise, so that the compressed data is long and a cut lands inside the scan."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        path, quality=90)


def _png(path, size=(32, 24), mode='L', seed=0):
    """``mode='L'``: a label map (class indices 0-5); ``'RGB'``: an image of noise."""
    rng = np.random.default_rng(seed)
    if mode == 'L':
        pixels = rng.integers(0, 6, (size[1], size[0]), dtype=np.uint8)
    else:
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _truncate(path, keep=0.5):
    """Keep the start of the file: the header stays valid, decoding fails."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _png_chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))


def _bomb_png(path, width=20000, height=20000):
    """A PNG of a few tens of KB whose header claims ``width`` x ``height`` RGB pixels
    (1.2 GB decoded at 20000 x 20000): a valid header, a zlib stream of zero rows."""
    rows = zlib.compress(b'\x00' * (width * 3 + 1) * 600, 9)
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr)
                     + _png_chunk(b'IDAT', rows) + _png_chunk(b'IEND', b''))


def _coco(root, n=2):
    """``root/annotations/instances_val.json`` and ``root/val/*.jpg``: a sane COCO instances
    set of ``n`` images, one box + polygon each; returns the json path and its data."""
    (root / 'val').mkdir(parents=True)
    (root / 'annotations').mkdir()
    images, anns = [], []
    for i in range(n):
        name = f'{i:06d}.jpg'
        _jpeg(root / 'val' / name, seed=i)
        images.append(dict(id=i + 1, file_name=name, width=32, height=24))
        anns.append(dict(id=i + 1, image_id=i + 1, category_id=1, bbox=[4, 4, 10, 8], area=80,
                         segmentation=[[4, 4, 14, 4, 14, 12, 4, 12]], iscrowd=0))
    data = dict(images=images, annotations=anns,
                categories=[dict(id=1, name='circle'), dict(id=2, name='square')])
    path = root / 'annotations' / 'instances_val.json'
    path.write_text(json.dumps(data))
    return path, data


def _coco_cfg(root, evaluator_ann=None):
    cfg = {'default_scope': 'mmdet',
           'test_dataloader': {'dataset': {
               'type': 'CocoDataset', 'data_root': str(root) + '/',
               'ann_file': 'annotations/instances_val.json', 'data_prefix': {'img': 'val/'}}}}
    if evaluator_ann:
        cfg['test_evaluator'] = {'type': 'CocoMetric', 'ann_file': str(evaluator_ann)}
    return cfg


def _refused(cfg, *fragments, loaders=('test_dataloader', )):
    """check_datasets raises one line holding every fragment."""
    with pytest.raises(preflight.UsageError) as info:
        preflight.check_datasets(cfg, list(loaders))
    msg = str(info.value)
    assert '\n' not in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


# ------------------------------------------------------------------------ COCO records
def test_sane_coco_passes(tmp_path):
    path, _ = _coco(tmp_path)
    preflight.check_datasets(_coco_cfg(tmp_path, evaluator_ann=path), ['test_dataloader'])


def _set_ann(i, **fields):
    return lambda d: d['annotations'][i].update(fields)


def _del(key, i, field):
    return lambda d: d[key][i].pop(field)


RECORD_DAMAGE = {
    'nan_box': (_set_ann(1, bbox=[NAN, 4, 10, 8]),
                ['annotations[1] (id 2)', '"bbox" [NaN, 4, 10, 8]', '4 finite numbers']),
    'infinite_box': (_set_ann(0, bbox=[4, 4, float('inf'), 8]),
                     ['annotations[0] (id 1)', 'Infinity', '4 finite numbers']),
    'two_number_box': (_set_ann(1, bbox=[4, 4]),
                       ['annotations[1] (id 2)', '"bbox" [4, 4]', '[x, y, width, height]']),
    'string_box': (_set_ann(0, bbox='4,4,10,8'),
                   ['annotations[0] (id 1)', '"bbox" "4,4,10,8"', '[x, y, width, height]']),
    'zero_width_box': (_set_ann(0, bbox=[4, 4, 0, 8]),
                       ['annotations[0] (id 1)', 'width 0', 'width and height > 0']),
    'two_point_polygon': (_set_ann(1, segmentation=[[4, 4, 14, 4]]),
                          ['annotations[1] (id 2)', 'segmentation[0]', '2 points',
                           'at least 3 points (6 numbers)']),
    'nan_polygon': (_set_ann(0, segmentation=[[4, 4, NAN, 4, 14, 12]]),
                    ['annotations[0] (id 1)', 'segmentation[0]', 'finite numbers']),
    'string_polygon': (_set_ann(0, segmentation='4 4 14 4 14 12'),
                       ['annotations[0] (id 1)', '"segmentation"', 'polygons']),
    'unknown_category': (_set_ann(1, category_id=7),
                         ['annotations[1] (id 2)', '"category_id" 7', 'categories', '[1, 2]']),
    'unknown_image': (_set_ann(0, image_id=99),
                      ['annotations[0] (id 1)', '"image_id" 99', 'no image has that id']),
    'nan_area': (_set_ann(0, area=NAN), ['annotations[0] (id 1)', '"area" NaN', '>= 0']),
    'annotation_without_id': (_del('annotations', 1, 'id'),
                              ['annotations[1] has no "id"', 'unique integer']),
    'image_without_id': (_del('images', 1, 'id'),
                         ['images[1] (000001.jpg) has no "id"', 'unique integer']),
    'string_image_id': (lambda d: d['images'][0].update(id='1'),
                        ['images[0] (000000.jpg) has "id" "1"', 'integer']),
    'duplicate_image_id': (lambda d: d['images'][1].update(id=1),
                           ['images[1] (000001.jpg) has "id" 1', 'images[0] has it too',
                            'unique']),
    'image_without_size': (_del('images', 0, 'height'),
                           ['images[0] (id 1)', '"height"', 'positive numbers']),
    'category_without_id': (_del('categories', 1, 'id'),
                            ['categories[1] has no "id"', 'unique integer']),
}


@pytest.mark.parametrize('damage', sorted(RECORD_DAMAGE))
def test_malformed_coco_record_is_refused(tmp_path, damage):
    """Failed before: none of these was refused; they gave a traceback from mmdet's dataset
    or pycocotools (a missing id, a string or 2-number bbox, an unknown category), or after
    the whole inference (a 2-point polygon), or a wrong metric (NaN boxes)."""
    path, data = _coco(tmp_path)
    mutate, fragments = RECORD_DAMAGE[damage]
    mutate(data)
    path.write_text(json.dumps(data))  # json writes NaN / Infinity, and Python reads them back
    _refused(_coco_cfg(tmp_path), f'annotation file {path}: ', *fragments)


def test_malformed_evaluator_annotation_file_is_refused(tmp_path):
    """The COCO metric reads its own ground truth (test_evaluator.ann_file): NaN boxes there
    gave an untrained model bbox mAP 0.5 (failed before: only its existence was checked)."""
    _coco(tmp_path)
    bad_root = tmp_path / 'other'
    bad, data = _coco(bad_root)
    data['annotations'][0]['bbox'] = [NAN, NAN, NAN, NAN]
    bad.write_text(json.dumps(data))
    _refused(_coco_cfg(tmp_path, evaluator_ann=bad), 'test_evaluator: annotation file',
             str(bad), 'annotations[0] (id 1)', '4 finite numbers')


# -------------------------------------------------------------------------------- images
def test_truncated_jpeg_is_refused(tmp_path):
    """Failed before: only the header was read, and it is intact."""
    path, _ = _coco(tmp_path)
    image = tmp_path / 'val' / '000001.jpg'
    _truncate(image)
    _refused(_coco_cfg(tmp_path), f'image {image} (images[1] of {path})', 'cannot be decoded',
             'truncated or corrupt')


def test_truncated_png_is_refused(tmp_path):
    path, data = _coco(tmp_path)
    image = tmp_path / 'val' / 'x.png'
    _png(image, mode='RGB')
    _truncate(image)
    data['images'][0]['file_name'] = 'x.png'
    path.write_text(json.dumps(data))
    _refused(_coco_cfg(tmp_path), f'image {image} (images[0] of {path})', 'cannot be decoded')


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    """A small PNG that claims 20000 x 20000 pixels (failed before: PIL's
    DecompressionBombError, a traceback; the loader would allocate 1.2 GB)."""
    path, data = _coco(tmp_path)
    image = tmp_path / 'val' / 'bomb.png'
    _bomb_png(image)
    assert image.stat().st_size < 64 * 1024
    data['images'][1]['file_name'] = 'bomb.png'
    path.write_text(json.dumps(data))
    _refused(_coco_cfg(tmp_path), f'image {image} (images[1] of {path})',
             'claims 20000 x 20000 pixels', 'more than 178956970', 'MMELSA_MAX_IMAGE_PIXELS')


def test_pixel_bound_is_configurable(tmp_path, monkeypatch):
    """MMELSA_MAX_IMAGE_PIXELS lowers (or raises) the bound; a bad value is one line too."""
    _coco(tmp_path)
    cfg = _coco_cfg(tmp_path)
    monkeypatch.setenv('MMELSA_MAX_IMAGE_PIXELS', '500')  # the images are 32 x 24 = 768
    _refused(cfg, 'images[0] of', 'claims 32 x 24 pixels', 'more than 500')
    monkeypatch.setenv('MMELSA_MAX_IMAGE_PIXELS', '768')
    preflight.check_datasets(cfg, ['test_dataloader'])
    monkeypatch.setenv('MMELSA_MAX_IMAGE_PIXELS', 'lots')
    _refused(cfg, "MMELSA_MAX_IMAGE_PIXELS='lots'", 'positive whole number')


def test_large_set_checks_the_end_of_each_image(tmp_path, monkeypatch):
    """Above FULL_DECODE_MAX_IMAGES images are not all decoded: a JPEG / PNG that does not end
    with its end marker is, so a truncated file is still caught, and a complete file with
    bytes after its end marker (some cameras write them) is still accepted."""
    monkeypatch.setattr(preflight, 'FULL_DECODE_MAX_IMAGES', 0)
    path, data = _coco(tmp_path, n=3)
    padded = tmp_path / 'val' / '000000.jpg'
    padded.write_bytes(padded.read_bytes() + b'\x00' * 200)
    png = tmp_path / 'val' / 'x.png'
    _png(png, mode='RGB')
    data['images'][2]['file_name'] = 'x.png'
    path.write_text(json.dumps(data))
    cfg = _coco_cfg(tmp_path)
    preflight.check_datasets(cfg, ['test_dataloader'])
    _truncate(tmp_path / 'val' / '000001.jpg', keep=0.9)
    _refused(cfg, 'images[1] of', 'cannot be decoded')
    _jpeg(tmp_path / 'val' / '000001.jpg', seed=1)
    _truncate(png, keep=0.9)
    _refused(cfg, 'images[2] of', 'cannot be decoded')


# ------------------------------------------------------- segmentation (ADE20K-style folders)
def _ade(root, n=2):
    for sub in ('images/validation', 'annotations/validation'):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        _jpeg(root / 'images' / 'validation' / f'{i:06d}.jpg', seed=i)
        _png(root / 'annotations' / 'validation' / f'{i:06d}.png', seed=i)
    return {'default_scope': 'mmseg', 'test_dataloader': {'dataset': {
        'type': 'BaseSegDataset', 'data_root': str(root), 'img_suffix': '.jpg',
        'seg_map_suffix': '.png', 'data_prefix': {'img_path': 'images/validation',
                                                  'seg_map_path': 'annotations/validation'}}}}


def test_sane_seg_folders_pass(tmp_path):
    preflight.check_datasets(_ade(tmp_path), ['test_dataloader'])


def test_seg_truncated_label_map_is_refused(tmp_path):
    cfg = _ade(tmp_path)
    label = tmp_path / 'annotations' / 'validation' / '000001.png'
    _truncate(label)
    _refused(cfg, f'label map {label}', 'label map of images/validation/000001.jpg',
             'cannot be decoded')


def test_seg_truncated_image_is_refused(tmp_path):
    cfg = _ade(tmp_path)
    image = tmp_path / 'images' / 'validation' / '000000.jpg'
    _truncate(image)
    _refused(cfg, f'image {image}', 'cannot be decoded')


def test_seg_bomb_image_is_refused(tmp_path):
    cfg = _ade(tmp_path)
    image = tmp_path / 'images' / 'validation' / '000000.jpg'
    _bomb_png(image)  # any extension: the header says what it is
    _refused(cfg, f'image {image}', 'claims 20000 x 20000 pixels')


def test_seg_missing_label_map_is_refused(tmp_path):
    cfg = _ade(tmp_path)
    label = tmp_path / 'annotations' / 'validation' / '000001.png'
    label.unlink()
    _refused(cfg, f'label map {label}', 'does not exist')


def test_seg_label_map_of_another_size_is_refused(tmp_path):
    """The metric compares the prediction (the image's size) with the label map: a traceback
    after the whole inference."""
    cfg = _ade(tmp_path)
    label = tmp_path / 'annotations' / 'validation' / '000001.png'
    _png(label, size=(16, 16))
    _refused(cfg, f'label map {label}', 'is 16 x 16 pixels', 'image is 32 x 24')


# ------------------------------------------------------- classification (mmpretrain lists)
def _cls(root, n=2, lines=None):
    (root / 'train').mkdir(parents=True)
    (root / 'meta').mkdir()
    for i in range(n):
        _png(root / 'train' / f'{i:06d}.png', mode='RGB', seed=i)
    lines = lines if lines is not None else [f'{i:06d}.png {i % 2}' for i in range(n)]
    (root / 'meta' / 'train.txt').write_text('\n'.join(lines) + '\n')
    return {'default_scope': 'mmpretrain', 'train_dataloader': {'dataset': {
        'type': 'CustomDataset', 'data_root': str(root), 'ann_file': 'meta/train.txt',
        'data_prefix': 'train', 'metainfo': {'classes': ('circle', 'square')}}}}


def test_sane_cls_list_passes(tmp_path):
    preflight.check_datasets(_cls(tmp_path), ['train_dataloader'])


def test_cls_truncated_image_is_refused(tmp_path):
    cfg = _cls(tmp_path)
    image = tmp_path / 'train' / '000001.png'
    _truncate(image)
    _refused(cfg, f'image {image}', f'line 2 of {tmp_path / "meta" / "train.txt"}',
             'cannot be decoded', loaders=['train_dataloader'])


def test_cls_bomb_image_is_refused(tmp_path):
    cfg = _cls(tmp_path)
    image = tmp_path / 'train' / '000000.png'
    _bomb_png(image)
    _refused(cfg, f'image {image}', 'line 1 of', 'claims 20000 x 20000 pixels',
             loaders=['train_dataloader'])


def test_cls_listed_image_missing_is_refused(tmp_path):
    cfg = _cls(tmp_path, lines=['000000.png 0', 'gone.png 1'])
    _refused(cfg, f'image {tmp_path / "train" / "gone.png"}', 'line 2 of', 'does not exist',
             loaders=['train_dataloader'])


@pytest.mark.parametrize('line, expected', [
    ('000001.png', 'expected "<file> <class index>"'),
    ('000001.png one', 'expected "<file> <class index>"'),
    ('000001.png 5', 'class index 5, but there are 2 classes'),
])
def test_cls_bad_list_line_is_refused(tmp_path, line, expected):
    cfg = _cls(tmp_path, lines=['000000.png 0', line])
    _refused(cfg, f'annotation file {tmp_path / "meta" / "train.txt"}: line 2', expected,
             loaders=['train_dataloader'])


def test_cls_class_folders_without_a_list_are_checked(tmp_path):
    """mmpretrain's folder layout (no ann_file: one subfolder per class)."""
    for cls_name in ('circle', 'square'):
        (tmp_path / 'train' / cls_name).mkdir(parents=True)
        _png(tmp_path / 'train' / cls_name / '0.png', mode='RGB')
    cfg = {'default_scope': 'mmpretrain', 'train_dataloader': {'dataset': {
        'type': 'ImageNet', 'data_root': str(tmp_path), 'data_prefix': 'train'}}}
    preflight.check_datasets(cfg, ['train_dataloader'])
    image = tmp_path / 'train' / 'square' / '0.png'
    _truncate(image)
    _refused(cfg, f'image {image}', 'cannot be decoded', loaders=['train_dataloader'])
