"""DDF-ResNet in mmpretrain: the configs' parameter counts are the release's, and a checkpoint
in the release's layout (timm's ResNet with DDF conv2 layers, random weights and BatchNorm
statistics) converts with tools/model_converters/ddf2mmelsa.py, loads strictly and gives the
logits of the release's model computed independently here (timm's ResNet with a DDF layer
written from the definition)."""
import glob
import importlib.util
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine import Config
from torch import nn

from ..ops.test_ddf import ddf_reference
from .test_ddf_modules import standardise

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
CONFIGS = osp.join(ROOT, 'configs', 'ddf_resnet')


def build_classifier(name):
    import mmelsa  # noqa: F401  (registers DDFResNet)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(CONFIGS, name + '.py'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # whatever a test before set
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('name,params', [('ddf-mul-resnet50_8xb128-120e_in1k', 16.8),
                                         ('ddf-add-resnet50_8xb128-120e_in1k', 16.8),
                                         ('ddf-mul-resnet101_8xb128-120e_in1k', 28.1)])
def test_parameter_counts_are_the_releases(name, params):
    model = build_classifier(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == params


class ReleaseDDF(nn.Module):
    """The release's DDF layer as its parameter layout and the definition give it: written
    here without mmelsa's modules or kernels."""

    def __init__(self, channels, stride, combine):
        super().__init__()
        self.stride, self.combine = stride, combine
        self.spatial_branch = nn.Sequential(nn.Conv2d(channels, 9, 1, stride=stride),
                                            nn.Identity())
        mid = int(channels * 0.2)
        std = nn.Module()
        std.std = nn.Parameter(torch.randn(channels * 9) * math.sqrt(2) / 3)
        self.channel_branch = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, mid, 1),
                                            nn.ReLU(), nn.Conv2d(mid, channels * 9, 1), std)

    def forward(self, x):
        B, C = x.shape[:2]
        sf = self.spatial_branch[0](x)
        sf = standardise(sf.reshape(B, 1, 9, *sf.shape[2:]), 2).reshape(sf.shape)
        sf = sf * math.sqrt(2) / 3
        cb = self.channel_branch
        cf = cb[3](F.relu(cb[1](x.mean((2, 3), keepdim=True))))
        cf = standardise(cf.reshape(B, C, 9), 2) * cb[4].std.reshape(C, 9)
        return ddf_reference(x, cf.reshape(B, C, 3, 3), sf, 3, 1, self.stride,
                             self.combine).to(x.dtype)


def release_model(combine):
    from timm.models.resnet import Bottleneck, ResNet
    torch.manual_seed(0)
    model = ResNet(Bottleneck, [3, 4, 6, 3])
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            block.conv2 = ReleaseDDF(block.conv2.in_channels, block.conv2.stride[0], combine)
    with torch.no_grad():  # trained-looking BatchNorm: statistics and affine terms not 0 / 1
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval().double()


@pytest.mark.parametrize('combine', ['mul', 'add'])
def test_release_checkpoint_converts_loads_strictly_and_gives_its_logits(combine, tmp_path):
    release = release_model(combine)
    src, dst = tmp_path / 'release.pth.tar', tmp_path / 'converted.pth'
    torch.save({'epoch': 120, 'arch': f'ddf_{combine}_resnet50',
                'state_dict': {'module.' + k: v.float() for k, v in
                               release.state_dict().items()}}, src)
    res = subprocess.run([sys.executable, 'tools/model_converters/ddf2mmelsa.py', str(src),
                          str(dst)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    model = build_classifier(f'ddf-{combine}-resnet50_8xb128-120e_in1k')
    state = torch.load(dst, weights_only=True)['state_dict']
    model.load_state_dict(state, strict=True)
    model = model.eval().double()
    x = torch.randn(2, 3, 64, 80, dtype=torch.float64)
    with torch.no_grad():
        got = model(x, mode='tensor')
        want = release(x)
    assert got.shape == want.shape == (2, 1000)
    assert torch.allclose(got, want, rtol=1e-7, atol=1e-7)


def test_backbone_only_loads_strictly_into_the_backbone(tmp_path):
    release = release_model('mul')
    src, dst = tmp_path / 'release.pth', tmp_path / 'backbone.pth'
    torch.save(release.float().state_dict(), src)
    res = subprocess.run([sys.executable, 'tools/model_converters/ddf2mmelsa.py', str(src),
                          str(dst), '--backbone-only'], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert '2 dropped' in res.stdout  # fc.weight, fc.bias
    backbone = build_classifier('ddf-mul-resnet50_8xb128-120e_in1k').backbone
    backbone.load_state_dict(torch.load(dst, weights_only=True)['state_dict'], strict=True)


def test_a_file_of_another_model_is_one_line(tmp_path):
    src = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7)}, src)
    res = subprocess.run([sys.executable, 'tools/model_converters/ddf2mmelsa.py', str(src),
                          str(tmp_path / 'out.pth')], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 1 and 'Traceback' not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {src}: not a DDF-ResNet state dict in the release layout: no "
        "'layer1.0.conv2.spatial_branch.0.weight' (a file already converted has "
        "backbone.-prefixed keys)")
    assert not (tmp_path / 'out.pth').exists()


def test_timm_is_importable():  # the independent model above is built on it
    assert importlib.util.find_spec('timm') is not None


CONFIG_NAMES = sorted(osp.basename(p)[:-3] for p in glob.glob(osp.join(CONFIGS, '*.py')))


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_imagenet_config_has_the_release_recipe(name):
    """Each config builds through mmpretrain with the release's recipe: batch 8 x 128, SGD lr
    0.4 with AMP, 5 warm-up epochs then cosine to epoch 120, label smoothing 0.1, RandAugment
    m7, random erasing 0.4, BatchNorm statistics averaged after each epoch, and weight decay
    off exactly for the 1-D parameters (as timm's optimizer factory does)."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(CONFIGS, name + '.py'))
    combine, depth = name.split('-')[1], int(name.split('-')[2].split('_')[0][len('resnet'):])
    assert cfg.model.backbone == dict(type='DDFResNet', depth=depth, kernel_combine=combine,
                                      num_stages=4, out_indices=(3, ), style='pytorch')
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 1024
    assert cfg.model.head.loss.label_smooth_val == 0.1
    steps = {t['type']: t for t in cfg.train_dataloader.dataset.pipeline}
    assert steps['RandAugment']['magnitude_level'] == 7
    assert steps['RandomErasing']['erase_prob'] == 0.4
    assert [h['type'] for h in cfg.custom_hooks] == ['SyncBuffersHook']
    warm, cosine = cfg.param_scheduler
    assert (warm['type'], warm['end'], cosine['type'], cosine['end']) == (
        'LinearLR', 5, 'CosineAnnealingLR', cfg.train_cfg.max_epochs) and cosine['end'] == 120
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    model = build_classifier(name)
    cfg.optim_wrapper.type = 'OptimWrapper'  # the AMP wrapper needs a GPU to be built
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    by_id = {id(p): (n, p) for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        assert group['lr'] == 0.4
        for p in group['params']:
            n, _ = by_id[id(p)]
            assert group['weight_decay'] == (0 if p.dim() == 1 else 1e-4), n
