"""Every toy config trains under the toolbox's own `mim train mmdet|mmseg|mmpretrain CONFIG`
(the toolbox's tools/train.py, which sets its own dataloader defaults, e.g. mmpretrain's
persistent_workers=True), for a couple of iterations on a few generated images."""
import os.path as osp

import pytest

from .conftest import REPO, needs_stack, python, run_tool

pytestmark = [needs_stack]

TOY = osp.join(REPO, 'configs', 'toy')
CLS_OPTIONS = ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=4',
               'val_dataloader.batch_size=4', 'default_hooks.checkpoint.interval=1']
# id: (toolbox, config, data, options)
CASES = {
    'mmdet': ('mmdet', 'mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py', 'toy_coco',
              ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=2']),
    'mmseg': ('mmseg', 'upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py', 'toy_ade',
              ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
               'train_dataloader.batch_size=2', 'default_hooks.checkpoint.interval=2']),
    'mmpretrain': ('mmpretrain', 'elsa-swin-toy_1xb32-8e_toy-cls-64px.py', 'toy_cls',
                   CLS_OPTIONS),
    'mmpretrain-ddf': ('mmpretrain', 'ddf-resnet-toy_1xb32-8e_toy-cls-64px.py', 'toy_cls',
                       CLS_OPTIONS),
}


@pytest.fixture(scope='module')
def tiny_toy(tmp_path_factory):
    """4 training / 2 validation images per set (seconds)."""
    from mmelsa.datasets.toy import main
    root = str(tmp_path_factory.mktemp('toy_tiny'))
    main(['--out', root, '--kind', 'all', '--num-train', '4', '--num-val', '2'])
    return root


def test_every_toy_config_is_covered():
    import glob
    assert sorted(c for _, c, _, _ in CASES.values()) == sorted(
        osp.basename(p) for p in glob.glob(osp.join(TOY, '*.py')))


@pytest.mark.slow
@pytest.mark.parametrize('case', sorted(CASES))
def test_mim_train_with_the_toolbox(case, tiny_toy, tmp_path):
    package, config, data, options = CASES[case]
    root = osp.join(tiny_toy, data) + '/'
    options = options + [f'{s}_dataloader.dataset.data_root={root}'
                         for s in ('train', 'val', 'test')]
    if data == 'toy_coco':
        ann = root + 'annotations/instances_val.json'
        options += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    work = tmp_path / 'work'
    res = run_tool([python(), '-m', 'mim', 'train', package, osp.join(TOY, config),
                    '--work-dir', str(work), '--cfg-options', *options], cwd=str(tmp_path),
                   timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert list(work.glob('epoch_*.pth')) or list(work.glob('iter_*.pth')), out[-3000:]
