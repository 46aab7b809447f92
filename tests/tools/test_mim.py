"""OpenMMLab's `mim` on mmelsa as tools/setup_env.sh installs it: `mim search` reads the model
index, `mim train` / `mim test` find a config by its name and run the package's own tools; and a
built package (wheel) carries the configs, tools and model index as files."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import yaml

from .conftest import REPO, needs_stack, python, run_tool, toy_data_options

SEG = 'upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py'
pytestmark = [needs_stack]


def mim(args, cwd, timeout=600):
    res = run_tool([python(), '-m', 'mim', *args], cwd=cwd, timeout=timeout)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    return res.stdout + res.stderr


def indexed_models():
    """Model names of every metafile the model index imports, read with plain yaml."""
    with open(osp.join(REPO, 'model-index.yml')) as f:
        imports = yaml.safe_load(f)['Import']
    names = []
    for rel in imports:
        with open(osp.join(REPO, rel)) as f:
            names += [m['Name'] for m in yaml.safe_load(f)['Models']]
    return imports, names


def test_model_index_covers_every_metafile_and_config():
    imports, names = indexed_models()
    metafiles = sorted(osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs', '*',
                                                                         'metafile.yml')))
    assert sorted(imports) == metafiles
    configs = {osp.splitext(osp.basename(p))[0]
               for p in glob.glob(osp.join(REPO, 'configs', '*', '*.py'))
               if osp.basename(osp.dirname(p)) != 'mmdeploy'}  # deploy configs, not models
    assert sorted(names) == sorted(configs)  # one entry per shipped config, no stale names


def test_mim_search_lists_every_model(tmp_path):
    out = mim(['search', 'mmelsa'], cwd=tmp_path)
    _, names = indexed_models()
    missing = [n for n in names if f'config id: {n}' not in out]
    assert not missing, out[-3000:]


@pytest.mark.slow
def test_mim_train_then_test_by_config_name(tmp_path, toy_root):
    """The config is given by name only (as in mmdet's docs), from a folder that does not hold
    it: mim must find it in mmelsa/.mim/configs and run mmelsa's tools/train.py and test.py."""
    work = tmp_path / 'work'
    data = toy_data_options('seg', toy_root)
    out = mim(['train', 'mmelsa', SEG, '--work-dir', str(work), '--cfg-options',
               'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
               'default_hooks.checkpoint.interval=2', *data], cwd=tmp_path)
    assert osp.realpath(osp.join(REPO, 'configs', 'toy', SEG)) in out
    ckpt = work / 'iter_2.pth'
    assert ckpt.is_file(), out[-3000:]
    out = mim(['test', 'mmelsa', SEG, '--checkpoint', str(ckpt), '--work-dir',
               str(tmp_path / 'test'), '--cfg-options', *data], cwd=tmp_path)
    line = [ln for ln in out.splitlines() if ln.startswith('mmelsa-metrics: ')][-1]
    metrics = json.loads(line[len('mmelsa-metrics: '):])
    assert 0.0 <= metrics['mIoU'] <= 100.0


def test_built_package_carries_configs_tools_and_index(tmp_path):
    """What a wheel holds: build_py's output has mmelsa/.mim with real files (not links into a
    checkout that a wheel's user does not have), identical to the sources."""
    lib = tmp_path / 'lib'
    res = subprocess.run([sys.executable, '-W', 'ignore', 'setup.py', '-q', 'build_py',
                          '--build-lib', str(lib)], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    mim_dir = lib / 'mmelsa' / '.mim'
    wanted = ['model-index.yml', f'configs/toy/{SEG}', 'configs/elsa_swin/metafile.yml',
              'tools/train.py', 'tools/test.py', 'tools/analysis_tools/get_flops.py']
    for rel in wanted:
        path = mim_dir / rel
        assert path.is_file() and not path.is_symlink(), rel
        with open(path, 'rb') as a, open(osp.join(REPO, rel), 'rb') as b:
            assert a.read() == b.read(), rel
    imports, _ = indexed_models()
    for rel in imports:  # the index's imports resolve inside the built package
        assert (mim_dir / rel).is_file(), rel
    assert not [d for d, _, _ in os.walk(mim_dir) if d.endswith('__pycache__')]
    # our development machinery (dev/: GPU-machine scripts, CI helpers; the CUDA emulator in
    # tests/) ships neither in the package nor in the sdist
    dev_files = {f for _, _, files in os.walk(osp.join(REPO, 'dev')) for f in files}
    dev_files |= set(os.listdir(osp.join(REPO, 'tests', 'ops', 'cuda_emulation'))) - {
        '__init__.py', '__pycache__'}
    assert dev_files, 'the development folders moved: update this test'
    shipped = {f for _, _, files in os.walk(lib) for f in files}
    assert not dev_files & shipped, dev_files & shipped
    assert not (mim_dir / 'dev').exists() and not (mim_dir / 'tests').exists()
    manifest = open(osp.join(REPO, 'MANIFEST.in')).read().split()
    assert not {'dev', 'tests'} & set(manifest), manifest
