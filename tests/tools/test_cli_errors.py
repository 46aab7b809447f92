"""Bad inputs to tools/train.py and tools/test.py end in one clear line, not a traceback."""
import json
import os.path as osp

import pytest

from .conftest import REPO, needs_stack, run_tool, toy_data_options

DET = 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py'
SEG = 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py'
CLS = 'configs/toy/elsa-swin-toy_1xb32-8e_toy-cls-64px.py'
pytestmark = needs_stack


def _assert_clear(res, *fragments):
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert 'Traceback' not in out, out
    for frag in fragments:
        assert frag in out, out


def test_missing_config():
    res = run_tool(['tools/train.py', 'configs/toy/no-such-config.py'])
    _assert_clear(res, 'config file not found: configs/toy/no-such-config.py')


def test_missing_config_suggests_close_name():
    typo = DET.replace('mask-rcnn', 'mask-rccn')  # a near miss, whatever the schedule
    assert typo != DET
    res = run_tool(['tools/test.py', typo, 'x.pth'])
    _assert_clear(res, 'config file not found', 'did you mean ' + DET)


def test_missing_data_root(tmp_path):
    missing = str(tmp_path / 'nowhere')
    res = run_tool(['tools/train.py', DET, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    f'train_dataloader.dataset.data_root={missing}'])
    _assert_clear(res, f'data root {missing} does not exist',
                  'python -m mmelsa.datasets.toy')


def test_missing_seg_images(tmp_path, toy_root):
    opts = toy_data_options('seg', toy_root)
    res = run_tool(['tools/train.py', SEG, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    *opts, 'train_dataloader.dataset.data_prefix.img_path=images/train'])
    _assert_clear(res, 'data_prefix.img_path folder', 'images/train does not exist')


def test_classification_image_folder_given_as_a_plain_string(tmp_path):
    """mmpretrain's datasets take ``data_prefix='train'`` (a string; failed before:
    AttributeError: 'str' object has no attribute 'items')."""
    from mmelsa.datasets.toy import generate_toy_cls
    root = generate_toy_cls(str(tmp_path), seed=0, num_train=3, num_val=3)
    res = run_tool(['tools/train.py', CLS, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    *(f'{k}_dataloader.dataset.data_root={root}' for k in ('train', 'val',
                                                                           'test')),
                    'train_dataloader.dataset.data_prefix=no_such_folder'])
    _assert_clear(res, 'data_prefix.img_path folder', 'no_such_folder does not exist')


def test_missing_annotation_file(tmp_path, toy_root):
    opts = toy_data_options('det', toy_root)
    res = run_tool(['tools/train.py', DET, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    *opts, 'train_dataloader.dataset.ann_file=annotations/instances_x.json'])
    _assert_clear(res, 'annotation file', 'instances_x.json does not exist')


def test_wrong_annotation_file(tmp_path, toy_root):
    # A JSON file that is not a COCO instances file.
    wrong = tmp_path / 'not_coco.json'
    wrong.write_text(json.dumps({'images': []}))
    opts = toy_data_options('det', toy_root)
    res = run_tool(['tools/train.py', DET, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    *opts, f'train_dataloader.dataset.ann_file={wrong}'])
    _assert_clear(res, 'is not a COCO instances file', 'annotations, categories')


def test_wrong_evaluator_annotation(tmp_path, toy_root):
    opts = toy_data_options('det', toy_root)
    ckpt = tmp_path / 'fake.pth'
    ckpt.write_bytes(b'')
    res = run_tool(['tools/test.py', DET, str(ckpt), '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', *opts, 'test_evaluator.ann_file=/nope/val.json'])
    _assert_clear(res, 'test_evaluator: annotation file /nope/val.json does not exist')


@pytest.mark.parametrize('key, message', [
    ('train_cfg.max_epoch=1', 'train_cfg has no "max_epoch"; did you mean "max_epochs"?'),
    ('model.backbnoe.depths=[1,1,1,1]', 'model has no "backbnoe"; did you mean "backbone"?'),
    ('trian_dataloader.batch_size=2', 'no top-level "trian_dataloader"; did you mean '
                                      '"train_dataloader"?'),
    ('train_cfg.max_epochs.x=1', '"train_cfg.max_epochs" is {max_epochs}, not a dict'),
])
def test_unknown_cfg_option(tmp_path, key, message):
    from mmengine.config import Config
    max_epochs = Config.fromfile(osp.join(REPO, DET)).train_cfg.max_epochs  # the config's own
    res = run_tool(['tools/train.py', DET, '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', key])
    _assert_clear(res, message.format(max_epochs=max_epochs))


def test_new_cfg_key_is_allowed():
    """Setting a constructor argument the config leaves at its default is not a typo."""
    from mmelsa.cli import preflight
    cfg = preflight.load_config(osp.join(REPO, DET), {'model.backbone.with_cp': True,
                                                      'randomness.deterministic': True})
    assert cfg.model.backbone.with_cp is True


def test_missing_checkpoint(tmp_path, toy_root):
    res = run_tool(['tools/test.py', DET, str(tmp_path / 'none.pth'), '--cfg-options',
                    *toy_data_options('det', toy_root)])
    _assert_clear(res, 'none.pth does not exist')


def test_missing_pretrained(tmp_path, toy_root):
    """The full recipes point at a placeholder ImageNet checkpoint: say how to supply it."""
    cfg = 'configs/elsa_swin/mask-rcnn_elsa-swin-t-p4-w7_fpn_amp-ms-crop-1x_coco.py'
    opts = [o for o in toy_data_options('det', toy_root)]
    res = run_tool(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', *opts,
                    'train_dataloader.dataset.ann_file=annotations/instances_train.json',
                    'train_dataloader.dataset.data_prefix.img=train/',
                    'val_dataloader.dataset.ann_file=annotations/instances_val.json',
                    'val_dataloader.dataset.data_prefix.img=val/'])
    _assert_clear(res, 'checkpoints/elsa_swin_tiny_in1k.pth does not exist',
                  'model.backbone.init_cfg.checkpoint=')


@pytest.mark.parametrize('content, message', [
    ('42', 'holds a JSON int; expected a COCO instances object'),
    ('null', 'holds a JSON null; expected a COCO instances object'),
    ('{"images": {}, "annotations": [], "categories": []}', '"images" is a JSON dict, expected '
     'a list'),
    ('{"images": [{"id": 1}], "annotations": [], "categories": []}', 'images[0] has no '
     '"file_name"'),
])
def test_malformed_annotation_json(tmp_path, toy_root, content, message):
    bad = tmp_path / 'bad.json'
    bad.write_text(content)
    opts = toy_data_options('det', toy_root)
    res = run_tool(['tools/train.py', DET, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    *opts, f'train_dataloader.dataset.ann_file={bad}'])
    _assert_clear(res, str(bad), message)


@pytest.mark.parametrize('damage', ['missing', 'corrupt'])
def test_referenced_image_missing_or_corrupt(tmp_path, toy_root, damage):
    import shutil
    root = tmp_path / 'toy_coco'
    shutil.copytree(osp.join(toy_root, 'toy_coco'), root)
    ann = json.loads((root / 'annotations' / 'instances_train.json').read_text())
    image = root / 'train' / ann['images'][3]['file_name']
    if damage == 'missing':
        image.unlink()
    else:
        image.write_bytes(b'\x00' * 100)
    opts = [o.replace(osp.join(toy_root, 'toy_coco'), str(root))
            for o in toy_data_options('det', toy_root)]
    res = run_tool(['tools/train.py', DET, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    *opts])
    _assert_clear(res, str(image), 'images[3]',
                  'does not exist' if damage == 'missing' else 'is not an image file')


def test_misspelt_backbone_argument_in_a_config(tmp_path, toy_root):
    config = tmp_path / 'my_config.py'
    config.write_text(f'_base_ = {osp.join(REPO, DET)!r}\n'
                      'model = dict(backbone=dict(embed_dim=48))\n')
    res = run_tool(['tools/train.py', str(config), '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', *toy_data_options('det', toy_root)])
    _assert_clear(res, 'ELSASwinTransformer has no argument "embed_dim"',
                  'did you mean "embed_dims"')


def test_pretrained_check_takes_an_init_cfg_list(tmp_path):
    """mmengine accepts a list of init_cfg entries (failed before: AttributeError 'list' object
    has no attribute 'get' in tools/train.py, before training started)."""
    from mmengine.config import Config

    from mmelsa.cli import preflight
    cfg = Config.fromfile(osp.join(REPO, SEG))
    there = tmp_path / 'there.pth'
    there.write_bytes(b'x')
    cfg.model.backbone.init_cfg = [dict(type='Pretrained', checkpoint=str(there)),
                                   dict(type='Constant', layer='LayerNorm', val=1.0)]
    preflight.check_pretrained(cfg)
    cfg.model.backbone.init_cfg[0]['checkpoint'] = str(tmp_path / 'missing.pth')
    with pytest.raises(preflight.UsageError, match='missing.pth does not exist'):
        preflight.check_pretrained(cfg)


@pytest.mark.parametrize('args, option', [
    (['tools/analysis_tools/get_flops.py', SEG, '--shape', '0', '64'], '--shape'),
    (['tools/analysis_tools/benchmark_backbone.py', '--size', '0', '0'], '--size'),
    (['tools/analysis_tools/benchmark_elsa_op.py', '--batch', '0'], '--batch'),
    (['tools/analysis_tools/benchmark_elsa_op.py', '--reps', '-1'], '--reps'),
])
def test_analysis_tools_refuse_sizes_below_one(args, option):
    """Failed before: a conv traceback (sizes 0), or --batch 0 silently taken as 'default'."""
    _assert_clear(run_tool(args), f'argument {option}: expected a positive integer')
