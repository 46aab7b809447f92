"""The DDF-ResNet detection and segmentation configs: each builds through its toolbox with
DDFResNet as the backbone and takes a training step on the toy data (at a reduced size), and
``init_cfg=Pretrained`` with ``prefix='backbone.'`` loads a converted classifier file into the
backbone exactly."""
import glob
import os.path as osp

import pytest
import torch

from .conftest import REPO, needs_stack
from .test_configs import build_model, load

DOWNSTREAM = sorted(glob.glob(osp.join(REPO, 'configs', 'ddf_resnet_det', 'mask-rcnn_*.py')) +
                    glob.glob(osp.join(REPO, 'configs', 'ddf_resnet_seg', '*.py')))
pytestmark = needs_stack


def _small(cfg):
    """Train at toy size: the full recipes resize to 1333 x 800 / crop 512 x 512."""
    for step in cfg.train_dataloader.dataset.pipeline:
        if step['type'] in ('Resize', 'RandomResize'):
            step['scale'] = (160, 128)
        if step['type'] == 'RandomCrop':
            step['crop_size'] = (96, 96)
    if 'size' in cfg.model.data_preprocessor:
        cfg.model.data_preprocessor['size'] = (96, 96)
    if 'test_cfg' in cfg.model and cfg.model.test_cfg.get('crop_size'):
        cfg.model.test_cfg.crop_size = (96, 96)


def test_there_are_det_and_seg_configs():
    assert {osp.basename(osp.dirname(p)) for p in DOWNSTREAM} == {'ddf_resnet_det',
                                                                   'ddf_resnet_seg'}


@pytest.mark.slow
@pytest.mark.parametrize('path', DOWNSTREAM, ids=[osp.basename(p)[:-3] for p in DOWNSTREAM])
def test_config_takes_a_training_step(path, toy_root):
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import Runner
    cfg = load(path, toy_root)
    assert cfg.custom_imports == dict(imports=['mmelsa'], allow_failed_imports=False)
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    cfg.model.backbone.init_cfg = None  # no converted file here (the test below loads one)
    _small(cfg)
    model = build_model(cfg)
    assert type(model.backbone).__name__ == 'DDFResNet'
    cfg.train_dataloader.batch_size = 2  # UperNet's pooled BatchNorm needs two samples
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader, seed=0)))
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.01)))
    spatial = model.backbone.layer2[0].conv2.spatial_branch[0].weight
    before = spatial.detach().clone()
    model.train()
    losses = model.train_step(batch, wrapper)
    assert losses and all(torch.isfinite(v).all() for v in losses.values())
    assert not torch.equal(before, spatial.detach())  # the DDF layers learn


def test_pretrained_loads_a_converted_classifier(tmp_path, toy_root):
    import mmelsa  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS as CLS_MODELS
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = CLS_MODELS.build(dict(
            type='ImageClassifier', backbone=dict(type='DDFResNet', depth=50),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048)))
    ckpt = tmp_path / 'ddf-mul-resnet50_in1k.pth'
    torch.save(dict(state_dict=classifier.state_dict()), ckpt)
    cfg = load(DOWNSTREAM[0], toy_root)
    cfg.model.backbone.init_cfg.checkpoint = str(ckpt)
    model = build_model(cfg)
    model.backbone.init_weights()
    want = classifier.backbone.state_dict()
    got = model.backbone.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
