"""tools/train.py and tools/test.py refuse bad data and a bad ``--out`` before any work, in
one line (exit 2) naming the file and the record, never a traceback or a wrong metric.

The per-record and per-image checks themselves are tested in process in
test_preflight_data.py; here the tools are run on copies of the toy sets with one thing broken.
The test runs use an empty checkpoint: before the checks, each of them went on past the
pre-flight (building the Runner, then failing on the checkpoint, in a traceback or after the
whole inference), so none ended with the line asserted here.
"""
import importlib.util
import json
import os.path as osp
import pathlib
import shutil

import pytest

from .conftest import REPO, needs_stack, run_tool, toy_data_options
from .test_preflight_data import NAN, _bomb_png, _truncate

DET = 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py'
SEG = 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py'
CLS = 'configs/toy/elsa-swin-toy_1xb32-8e_toy-cls-64px.py'
pytestmark = needs_stack


def _assert_one_line(res, *fragments):
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert 'Traceback' not in out, out
    errors = [line for line in out.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, out
    for frag in fragments:
        assert frag in errors[0], out


def _copy(toy_root, kind, tmp_path):
    """A private copy of a toy set, and the --cfg-options that point a config at it."""
    name = {'det': 'toy_coco', 'seg': 'toy_ade'}[kind]
    root = tmp_path / name
    shutil.copytree(osp.join(toy_root, name), root)
    opts = [o.replace(osp.join(toy_root, name), str(root))
            for o in toy_data_options(kind, toy_root)]
    return root, opts


def _empty_checkpoint(tmp_path):
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'')
    return str(ckpt)


def test_test_refuses_nan_boxes(tmp_path, toy_root):
    """NaN boxes in the ground truth gave an untrained detector bbox mAP 0.5 and exit 0."""
    root, opts = _copy(toy_root, 'det', tmp_path)
    ann = root / 'annotations' / 'instances_val.json'
    data = json.loads(ann.read_text())
    for a in data['annotations']:
        a['bbox'] = [NAN] * 4
    ann.write_text(json.dumps(data))
    res = run_tool(['tools/test.py', DET, _empty_checkpoint(tmp_path), '--work-dir',
                    str(tmp_path / 'w'), '--cfg-options', *opts])
    _assert_one_line(res, f'annotation file {ann}: annotations[0] (id 1): "bbox" [NaN, NaN, '
                          'NaN, NaN]', '4 finite numbers')


def test_train_refuses_an_image_record_without_id(tmp_path, toy_root):
    """Failed before: KeyError 'id' from pycocotools, a traceback from inside the Runner."""
    root, opts = _copy(toy_root, 'det', tmp_path)
    ann = root / 'annotations' / 'instances_train.json'
    data = json.loads(ann.read_text())
    del data['images'][5]['id']
    ann.write_text(json.dumps(data))
    res = run_tool(['tools/train.py', DET, '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', *opts])
    _assert_one_line(res, f'annotation file {ann}: images[5] (000005.jpg) has no "id"')


def test_test_refuses_a_truncated_seg_image(tmp_path, toy_root):
    root, opts = _copy(toy_root, 'seg', tmp_path)
    image = root / 'images' / 'validation' / '000002.jpg'
    _truncate(image)
    res = run_tool(['tools/test.py', SEG, _empty_checkpoint(tmp_path), '--work-dir',
                    str(tmp_path / 'w'), '--cfg-options', *opts])
    _assert_one_line(res, f'image {image}', 'cannot be decoded')


def test_test_refuses_a_decompression_bomb_in_a_cls_set(tmp_path):
    from mmelsa.datasets.toy import generate_toy_cls
    root = generate_toy_cls(str(tmp_path), seed=0, num_train=3, num_val=3)
    image = osp.join(root, 'val', '000001.png')
    _bomb_png(pathlib.Path(image))
    res = run_tool(['tools/test.py', CLS, _empty_checkpoint(tmp_path), '--work-dir',
                    str(tmp_path / 'w'), '--cfg-options',
                    *(f'{k}_dataloader.dataset.data_root={root}' for k in ('train', 'val',
                                                                           'test'))])
    _assert_one_line(res, f'image {image} (line 2 of', 'claims 20000 x 20000 pixels')


# ----------------------------------------------------------------------------------- --out
@pytest.fixture(scope='module')
def test_tool():
    """tools/test.py as a module (by its path: ``import test`` may find the standard
    library's package)."""
    spec = importlib.util.spec_from_file_location('mmelsa_tools_test',
                                                  osp.join(REPO, 'tools', 'test.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _out_refused(tool, tmp_path, config, out, *fragments, overwrite=False):
    from mmelsa.cli import preflight
    ckpt = tmp_path / 'm.pth'
    ckpt.write_bytes(b'x')
    argv = [osp.join(REPO, config), str(ckpt), '--out', str(out)]
    with pytest.raises(preflight.UsageError) as info:
        tool.build_cfg(tool.parse_args(argv + (['--overwrite'] if overwrite else [])))
    for frag in fragments:
        assert frag in str(info.value), str(info.value)


@pytest.mark.parametrize('config', [DET, CLS])
@pytest.mark.parametrize('name', ['pred.pkl', 'pred'])
def test_out_folder_where_a_pkl_file_is_expected(test_tool, tmp_path, config, name):
    """Failed before: a folder named *.pkl passed with --overwrite and the dump failed after
    the whole test (IsADirectoryError); a folder without the suffix was told to be a .pkl."""
    out = tmp_path / name
    out.mkdir()
    _out_refused(test_tool, tmp_path, config, out, f'--out {out} is a folder', '.pkl file',
                 overwrite=True)


def test_out_under_a_file(test_tool, tmp_path):
    """A parent that is a file: the dump cannot create it (failed before: after the test)."""
    blocker = tmp_path / 'notes.txt'
    blocker.write_text('x')
    _out_refused(test_tool, tmp_path, DET, blocker / 'pred.pkl',
                 f'{blocker} is a file, not a folder')
    _out_refused(test_tool, tmp_path, SEG, blocker / 'pngs', f'{blocker} is a file, not a folder')


def test_seg_out_that_is_a_file(test_tool, tmp_path):
    """Segmentation writes PNGs into a folder (failed before: mmseg's IoUMetric failed to
    make the folder when the Runner was built, a traceback)."""
    out = tmp_path / 'pred.txt'
    out.write_text('x')
    _out_refused(test_tool, tmp_path, SEG, out, f'--out {out} is a file',
                 'prediction PNGs into a folder', overwrite=True)


def test_seg_out_with_a_pkl_name(test_tool, tmp_path):
    """--out pred.pkl for segmentation would make a folder named pred.pkl full of PNGs."""
    _out_refused(test_tool, tmp_path, SEG, tmp_path / 'pred.pkl', 'prediction PNGs into a '
                 'folder, not a .pkl file')


def test_out_where_nothing_may_be_written(tmp_path, monkeypatch):
    """A folder this process may not write in (faked: the tests may run as root, who may)."""
    import os
    import re

    from mmelsa.cli import preflight
    monkeypatch.setattr(os, 'access', lambda path, mode: False)
    for task, out in (('det', tmp_path / 'new' / 'pred.pkl'), ('seg', tmp_path / 'pngs')):
        expected = re.escape(f'no permission to write {tmp_path}')
        with pytest.raises(preflight.UsageError, match=expected):
            preflight.check_out_path(str(out), task)
