"""Flag handling of tools/train.py and tools/test.py (in process, no training)."""
import copy
import os
import os.path as osp
import subprocess

import pytest

from .conftest import REPO, needs_stack

DET = osp.join(REPO, 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py')
SEG = osp.join(REPO, 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py')
CLS = osp.join(REPO, 'configs/toy/elsa-swin-toy_1xb32-8e_toy-cls-64px.py')
FULL_DET = osp.join(REPO, 'configs/elsa_swin/'
                    'mask-rcnn_elsa-swin-t-p4-w7_fpn_amp-ms-crop-3x_coco.py')
pytestmark = needs_stack


@pytest.fixture
def tools():
    import sys
    sys.path.insert(0, osp.join(REPO, 'tools'))
    import test as test_tool
    import train as train_tool
    return train_tool, test_tool


def test_train_flags(tools, tmp_path):
    train, _ = tools
    cfg = train.build_cfg(train.parse_args([DET, '--amp', '--resume', '--work-dir',
                                            str(tmp_path)]))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.resume is True and cfg.load_from is None  # bare --resume: the latest ckpt
    assert cfg.work_dir == str(tmp_path) and cfg.launcher == 'none'
    cfg = train.build_cfg(train.parse_args([DET]))
    assert cfg.work_dir == osp.join('./work_dirs', 'mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco')
    assert not cfg.resume


def test_train_amp_refuses_other_optim_wrappers(tools):
    """--amp upgrades OptimWrapper only; another wrapper is a usage error naming it (it was an
    assert, which `python -O` removes)."""
    train, _ = tools
    from mmelsa.cli import preflight
    args = train.parse_args([DET, '--amp', '--cfg-options', 'optim_wrapper.type=ApexOptimWrapper'])
    with pytest.raises(preflight.UsageError, match='optim_wrapper.type=ApexOptimWrapper'):
        train.build_cfg(args)


@pytest.mark.parametrize('has_gpu', [False, True])
def test_train_amp_without_a_gpu_is_one_line(tools, monkeypatch, has_gpu):
    """AmpOptimWrapper asserts a GPU when mmengine builds it (failed before: that assertion's
    traceback on a CPU machine, for --amp and for every full recipe)."""
    import mmengine.device
    train, _ = tools
    from mmelsa.cli import preflight
    for name in ('is_cuda_available', 'is_npu_available', 'is_mlu_available',
                 'is_musa_available'):
        monkeypatch.setattr(mmengine.device, name, lambda: has_gpu)
    for args in ([DET, '--amp'], [FULL_DET]):
        cfg = train.build_cfg(train.parse_args(args))
        if has_gpu:
            preflight.check_amp_device(cfg)
            continue
        with pytest.raises(preflight.UsageError, match='needs a GPU.*optim_wrapper.type='
                           'OptimWrapper'):
            preflight.check_amp_device(cfg)
    preflight.check_amp_device(train.build_cfg(train.parse_args([DET])))  # no AMP: no GPU needed


def test_train_resume_from_path(tools, tmp_path):
    train, _ = tools
    import torch
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {}}, ckpt)
    cfg = train.build_cfg(train.parse_args([DET, '--resume', str(ckpt)]))
    assert cfg.resume is True and cfg.load_from == str(ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:20])  # a save cut short
    from mmelsa.cli import preflight
    with pytest.raises(preflight.UsageError, match='is damaged'):
        train.build_cfg(train.parse_args([DET, '--resume', str(ckpt)]))


def test_cpu_distributed_uses_gloo(tools):
    """What SafeRunner.from_cfg applies to a distributed config (every tool that builds it)."""
    import torch

    from mmelsa.engine.distributed import use_gloo_without_cuda
    train, _ = tools
    cfg = train.build_cfg(train.parse_args([DET, '--launcher', 'pytorch']))
    use_gloo_without_cuda(cfg)
    cuda = torch.cuda.is_available()
    assert cfg.env_cfg.dist_cfg.backend == ('nccl' if cuda else 'gloo')
    if not cuda:
        assert cfg.model_wrapper_cfg.device_ids is None


def test_task_detection(tools):
    from mmelsa.cli import preflight
    from mmelsa.utils.toolboxes import scope_of, task_of
    assert task_of(preflight.load_config(DET)) == 'det'
    assert task_of(preflight.load_config(SEG)) == 'seg'
    cls_cfg = preflight.load_config(CLS)
    assert task_of(cls_cfg) == 'cls' and scope_of(cls_cfg) == 'mmpretrain'
    # without default_scope, the model type tells
    assert task_of({'model': {'type': 'ImageClassifier'}}) == 'cls'
    assert task_of({'model': {'type': 'EncoderDecoder'}}) == 'seg'
    assert task_of({'model': {'type': 'MaskRCNN'}}) == 'det'


def test_test_flags_seg_tta_show_out(tools, tmp_path, toy_root):
    _, test = tools
    ckpt = tmp_path / 'm.pth'
    ckpt.write_bytes(b'x')
    cfg, task = test.build_cfg(test.parse_args([
        SEG, str(ckpt), '--tta', '--show-dir', 'vis', '--out', str(tmp_path / 'png')]))
    assert task == 'seg'
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.type == 'EncoderDecoder'
    assert cfg.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'
    assert cfg.visualizer.save_dir == osp.join(cfg.work_dir, 'vis')  # under the work dir
    assert cfg.default_hooks.visualization.draw and cfg.default_hooks.visualization.interval == 1
    assert cfg.test_evaluator.output_dir == str(tmp_path / 'png')
    assert cfg.load_from == str(ckpt)


def test_test_flags_det(tools, tmp_path):
    _, test = tools
    ckpt = tmp_path / 'm.pth'
    ckpt.write_bytes(b'x')
    cfg, task = test.build_cfg(test.parse_args([FULL_DET, str(ckpt), '--show-dir', 'vis']))
    assert task == 'det' and cfg.default_hooks.visualization.test_out_dir == 'vis'
    # the placeholder ImageNet checkpoint is not needed to test a trained model
    assert cfg.model.backbone.init_cfg is None
    from mmelsa.cli import preflight
    with pytest.raises(preflight.UsageError, match='merges boxes only'):
        test.build_cfg(test.parse_args([DET, str(ckpt), '--tta']))
    with pytest.raises(preflight.UsageError, match='.pkl'):
        test.build_cfg(test.parse_args([DET, str(ckpt), '--out', 'x.json']))


def test_test_out_is_not_overwritten_unasked(tools, tmp_path):
    """tools/test.py --out replaced an earlier predictions file (det) or wrote over the PNGs of
    a folder (seg) without asking (failed before)."""
    _, test = tools
    from mmelsa.cli import preflight
    ckpt = tmp_path / 'm.pth'
    ckpt.write_bytes(b'x')
    pkl, folder = tmp_path / 'pred.pkl', tmp_path / 'pred'
    for cfg, out in ((DET, pkl), (SEG, folder)):
        test.build_cfg(test.parse_args([cfg, str(ckpt), '--out', str(out)]))  # not there yet
    pkl.write_bytes(b'precious')
    folder.mkdir()
    with pytest.raises(preflight.UsageError, match='pred.pkl already exists: pass --overwrite'):
        test.build_cfg(test.parse_args([DET, str(ckpt), '--out', str(pkl)]))
    test.build_cfg(test.parse_args([SEG, str(ckpt), '--out', str(folder)]))  # empty: fine
    (folder / '000000.png').write_bytes(b'precious')
    with pytest.raises(preflight.UsageError, match='is not empty'):
        test.build_cfg(test.parse_args([SEG, str(ckpt), '--out', str(folder)]))
    for cfg, out in ((DET, pkl), (SEG, folder)):
        test.build_cfg(test.parse_args([cfg, str(ckpt), '--out', str(out), '--overwrite']))


@pytest.mark.parametrize('script', ['dist_train.sh', 'dist_test.sh', 'slurm_train.sh',
                                    'run_toy.sh'])
def test_shell_scripts_parse(script):
    subprocess.run(['bash', '-n', osp.join(REPO, 'tools', script)], check=True)


def test_tta_reaches_every_test_set_under_a_wrapper():
    """mmelsa.cli.evaluation: a test set made of several datasets (ConcatDataset) gets the
    TTA pipeline in each of them, not only in one."""
    from mmelsa.cli import evaluation, preflight
    cfg = preflight.load_config(SEG)
    leaf = cfg.test_dataloader.dataset
    cfg.test_dataloader.dataset = dict(type='ConcatDataset', datasets=[leaf, copy.deepcopy(leaf)])
    evaluation.enable_tta(cfg)
    leaves = list(preflight.inner_datasets(cfg.test_dataloader.dataset))
    assert len(leaves) == 2
    assert all(ds.pipeline == cfg.tta_pipeline for ds in leaves)
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.type == 'EncoderDecoder'


@pytest.mark.parametrize('flag', ['--local-rank', '--local_rank'])
def test_launcher_flags_of_both_tools(tools, monkeypatch, flag):
    """torch.distributed.launch's rank flag (either spelling) reaches mmengine as LOCAL_RANK
    unless the launcher already set it; --launcher reaches the config."""
    train, test = tools
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    cfg = train.build_cfg(train.parse_args([DET, flag, '3', '--launcher', 'pytorch']))
    assert cfg.launcher == 'pytorch'
    assert os.environ['LOCAL_RANK'] == '3'
    monkeypatch.setenv('LOCAL_RANK', '1')  # set by torchrun: kept
    test.parse_args([SEG, 'model.pth', flag, '2'])
    assert os.environ['LOCAL_RANK'] == '1'
