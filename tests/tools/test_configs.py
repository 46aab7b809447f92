"""Every config in configs/ builds its model and dataloaders, and the no-weight-decay keys
really match the backbone's parameters."""
import glob
import os.path as osp

import pytest
import torch
import torch.nn as nn

from .conftest import REPO, needs_stack, point_at_toy

# Detection and segmentation model configs: configs/mmdeploy/ holds MMDeploy's deploy configs
# (tests/deployment uses them); the classification configs, mmpretrain's, are checked in
# tests/models/test_classification.py, test_elsa_volo.py, test_ddf_resnet.py,
# test_conv_stem_configs.py and tests/tools/test_toy_e2e.py.
CLASSIFICATION = ('elsa_swin_cls', 'elsa_volo', 'ddf_resnet', 'conv_stem')
# DDF-ResNet's detection and segmentation configs: tests/tools/test_ddf_configs.py
DDF = ('ddf_resnet_det', 'ddf_resnet_seg')
CONFIGS = sorted(c for c in glob.glob(osp.join(REPO, 'configs', '*', '*.py'))
                 if osp.basename(osp.dirname(c)) not in ('mmdeploy', ) + CLASSIFICATION + DDF
                 and '_toy-cls' not in osp.basename(c))
FULL = [c for c in CONFIGS if '/toy/' not in c]
pytestmark = needs_stack


def _ids(paths):
    return [osp.basename(p)[:-3] for p in paths]


def load(path, toy_root):
    from mmelsa.cli import preflight
    cfg = preflight.load_config(path)
    return point_at_toy(cfg, toy_root)


def build_model(cfg):
    from mmengine.registry import init_default_scope
    from mmelsa.utils.toolboxes import task_of
    init_default_scope(cfg.default_scope)
    if task_of(cfg) == 'det':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    from mmengine.model import revert_sync_batchnorm
    return revert_sync_batchnorm(MODELS.build(cfg.model))


def test_every_family_has_configs():
    fams = {osp.basename(osp.dirname(c)) for c in CONFIGS}
    assert {'elsa_swin', 'elsa_swin_seg', 'toy'} <= fams
    assert len([c for c in CONFIGS if '/elsa_swin/' in c]) == 8
    assert len([c for c in CONFIGS if '/elsa_swin_seg/' in c]) == 2


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIGS, ids=_ids(CONFIGS))
def test_config_builds_model_and_one_batch(path, toy_root):
    from mmengine.runner import Runner
    cfg = load(path, toy_root)
    assert cfg.custom_imports == dict(imports=['mmelsa'], allow_failed_imports=False)
    model = build_model(cfg)
    assert type(model.backbone).__name__ == 'ELSASwinTransformer'
    cfg.train_dataloader.batch_size = 2
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    batch = next(iter(loader))
    assert len(batch['inputs']) == 2 and len(batch['data_samples']) == 2
    # The data preprocessor accepts it (normalise, pad, stack), as the train step would.
    with torch.no_grad():
        data = model.data_preprocessor(batch, training=True)
    assert data['inputs'].shape[:2] == (2, 3)
    for key in ('val_dataloader', 'test_dataloader'):
        assert len(Runner.build_dataloader(cfg[key], seed=0).dataset) == 8


def _intended_no_decay(model):
    """Parameter names that the ELSA recipe exempts from weight decay: every LayerNorm, the
    stage-4 relative position table ``rb`` and the ghost head."""
    names = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.LayerNorm):
            names |= {f'{mod_name}.{n}' for n, _ in mod.named_parameters(recurse=False)}
    for n, _ in model.named_parameters():
        if n.endswith('.attn.rb') or 'ghost_head' in n:
            names.add(n)
    return names


def _decay_by_name(model, optim_cfg):
    from mmengine.optim import build_optim_wrapper
    optim_cfg = optim_cfg.copy()
    # AMP does not change parameter groups; OptimWrapper builds on a CPU-only machine.
    optim_cfg['type'] = 'OptimWrapper'
    optim_cfg.pop('loss_scale', None)
    wrapper = build_optim_wrapper(model, optim_cfg)
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)]: g['weight_decay'] for g in wrapper.optimizer.param_groups
            for p in g['params']}, optim_cfg['optimizer']['weight_decay']


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIGS, ids=_ids(CONFIGS))
def test_no_decay_keys_match_real_parameters(path, toy_root):
    cfg = load(path, toy_root)
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert set(keys) == {'norm', 'attn.rb', 'ghost_head'}
    assert all(v == dict(decay_mult=0.) for v in keys.values())
    model = build_model(cfg)
    intended = {f'backbone.{n}' for n in _intended_no_decay(model.backbone)}
    # The intended set is not vacuous: norms of every kind, rb of every stage-4 block and a
    # ghost head in every ELSA block are there.
    depths = cfg.model.backbone.depths
    assert sum(n.endswith('.attn.rb') for n in intended) == depths[3]
    assert sum('ghost_head' in n for n in intended) == sum(depths[:3])
    assert any('.norm0.' in n for n in intended) and any('downsample.norm' in n
                                                         for n in intended)
    decay, base_wd = _decay_by_name(model, cfg.optim_wrapper)
    wrong = sorted(n for n in intended if decay[n] != 0)
    assert not wrong, f'intended no-decay parameters that still decay: {wrong}'
    # ... and nothing else in the backbone lost its weight decay by an accidental match.
    extra = sorted(n for n, wd in decay.items()
                   if n.startswith('backbone.') and n not in intended and wd != base_wd)
    assert not extra, f'backbone parameters without decay that should have it: {extra}'


def test_toy_backbone_is_small():
    """The embedded default must stay cheap: a few hundred thousand backbone parameters."""
    from mmelsa.cli import preflight
    cfg = preflight.load_config(osp.join(REPO, 'configs/toy/'
                                       'mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py'))
    model = build_model(cfg)
    n = sum(p.numel() for p in model.backbone.parameters())
    assert n < 2_000_000


@pytest.mark.parametrize('path', sorted(glob.glob(osp.join(REPO, 'configs', 'toy', '*.py'))),
                         ids=_ids)
def test_toy_configs_log_validation_by_iteration(path):
    """tools/analysis_tools/toy_report.py draws the validation metric on the training loss's
    iteration axis, so every toy config logs it by iteration (the classifier's logged it by
    epoch: its curve ran from 0 to 8 on an axis labelled iteration)."""
    from mmelsa.cli import preflight
    cfg = preflight.load_config(path)
    assert cfg.default_hooks.logger.get('log_metric_by_epoch', True) is False
