"""Fixtures for the tools/configs tests: small toy datasets in a temporary folder and the
helpers that point any config (toy or full COCO/ADE20K recipe) at them."""
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(REPO, 'tools')


def have(module):
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001 - a broken install is "not available" here
        return False


def have_stack():
    """mmdet + mmseg installed and the ELSA backbone registered."""
    if not (have('mmdet') and have('mmseg')):
        return False
    try:
        import mmelsa  # noqa: F401
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        register_all_modules(init_default_scope=False)
        return MODELS.get('ELSASwinTransformer') is not None
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope='session')
def stack():
    """The OpenMMLab stack is a dependency, not an option: a broken install fails here."""
    assert have_stack(), ('mmdet / mmseg cannot be imported or do not find '
                          'ELSASwinTransformer: run tools/setup_env.sh')


needs_stack = pytest.mark.usefixtures('stack')


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory):
    """Small toy datasets (24 train / 8 val images each), generated once per session."""
    from mmelsa.datasets.toy import generate_toy_ade, generate_toy_coco
    root = str(tmp_path_factory.mktemp('toy_data'))
    generate_toy_coco(root, seed=0, num_train=24, num_val=8)
    generate_toy_ade(root, seed=0, num_train=24, num_val=8)
    return root


def point_at_toy(cfg, toy_root):
    """Rewrite every dataset/evaluator path of ``cfg`` to the toy data under ``toy_root``."""
    from mmelsa.cli.preflight import inner_datasets
    from mmelsa.utils.toolboxes import task_of
    det = task_of(cfg) == 'det'
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        loader.num_workers = 0
        loader.persistent_workers = False
        for ds in inner_datasets(loader.dataset):
            if det:
                ds.data_root = osp.join(toy_root, 'toy_coco')
                name = 'train' if split == 'train' else 'val'
                ds.ann_file = f'annotations/instances_{name}.json'
                ds.data_prefix = dict(img=f'{name}/')
                # The full recipes expect COCO's 80 classes, none of which the toy set has.
                from mmelsa.datasets.toy import DET_CLASSES
                ds.metainfo = dict(classes=DET_CLASSES)
            else:
                ds.data_root = osp.join(toy_root, 'toy_ade')
                name = 'training' if split == 'train' else 'validation'
                ds.data_prefix = dict(img_path=f'images/{name}',
                                      seg_map_path=f'annotations/{name}')
                ds.img_suffix = '.jpg'
                ds.seg_map_suffix = '.png'
    for key in ('val_evaluator', 'test_evaluator'):
        ev = cfg.get(key)
        if isinstance(ev, dict) and 'ann_file' in ev:
            ev.ann_file = osp.join(toy_root, 'toy_coco', 'annotations', 'instances_val.json')
    return cfg


def toy_data_options(kind, toy_root):
    """The same as --cfg-options arguments for the toy configs (data_root only)."""
    if kind == 'det':
        root = osp.join(toy_root, 'toy_coco') + '/'
        ann = root + 'annotations/instances_val.json'
        return [f'{s}_dataloader.dataset.data_root={root}' for s in ('train', 'val', 'test')] \
            + [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    root = osp.join(toy_root, 'toy_ade')
    return [f'{s}_dataloader.dataset.data_root={root}' for s in ('train', 'val', 'test')]


def python():
    venv = osp.join(REPO, '.venv', 'bin', 'python')
    return venv if osp.exists(venv) else sys.executable


def run_tool(args, timeout=600, env=None, cwd=REPO):
    """Run a tools/ script (or any command list); returns CompletedProcess with text output."""
    full_env = dict(os.environ)
    full_env['PYTHONPATH'] = REPO + os.pathsep + full_env.get('PYTHONPATH', '')
    full_env.setdefault('OMP_NUM_THREADS', '2')
    if env:
        full_env.update(env)
    if args and args[0].endswith('.py'):
        args = [python()] + args
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
