"""DDF-Up (DDFUpPack) against a computation written here from its definition (docs/ddf_facts.md,
"DDF-Up"), in float64; the release's parameter layout; and DDFUpFPN, mmdet's FPN upsampling by
DDF-Up, built from configs/ddf_resnet_det through mmdet's registry."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from mmelsa.models.ddf import DDFUpPack

from ..ops.test_ddf import ddf_reference
from .test_ddf_modules import standardise

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'ddf_resnet_det', 'faster-rcnn_r50-ddfup-fpn_1x_coco.py')


def release_layout(C, K, r, head, se_ratio, dw_kernel_size, joint_channels):
    """Parameter names and shapes of the release's DDFUpPack (ddf/ddf.py of
    theFoxofSky/ddfnet): per pair p, ``build_channel_branch``'s Sequential(pool, conv, ReLU,
    conv, FilterNorm(std)); without guidance Sequential(depth-wise conv,
    ``build_spatial_branch``'s Sequential(1x1 conv, FilterNorm)), with guidance the latter
    alone."""
    mid, taps = int(C * se_ratio), K * K
    layout = {}
    for p in range(r * r):
        layout.update({
            f'channel_branch.{p}.1.weight': (mid, C, 1, 1),
            f'channel_branch.{p}.1.bias': (mid, ),
            f'channel_branch.{p}.3.weight': (C * taps, mid, 1, 1),
            f'channel_branch.{p}.3.bias': (C * taps, ),
            f'channel_branch.{p}.4.std': (C * taps, ),
        })
        if joint_channels > 0:
            layout.update({f'spatial_branch.{p}.0.weight': (head * taps, joint_channels, 1, 1),
                           f'spatial_branch.{p}.0.bias': (head * taps, )})
        else:
            layout.update({
                f'spatial_branch.{p}.0.weight': (C, 1, dw_kernel_size, dw_kernel_size),
                f'spatial_branch.{p}.0.bias': (C, ),
                f'spatial_branch.{p}.1.0.weight': (head * taps, C, 1, 1),
                f'spatial_branch.{p}.1.0.bias': (head * taps, ),
            })
    return layout


def reference_up(m, x, guide=None, dw_kernel_size=3):
    """DDF-Up from its definition, reading ``m``'s weights: pair p's stride-1 DDF of x is the
    output's sub-pixel (i, j) = divmod(p, r); 'linear' gain 1 / K for the spatial filters."""
    B, C, H, W = x.shape
    K, r, G, d = m.kernel_size, m.scale_factor, m.head, m.dilation
    guided = guide is not None and m.joint_channels > 0
    guide = x if guide is None else guide
    out = torch.zeros(B, C, r * H, r * W, dtype=torch.float64)
    for p in range(r * r):
        cb, sb = m.channel_branch[p], m.spatial_branch[p]
        squeeze = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), cb[1].weight, cb[1].bias))
        cf = F.conv2d(squeeze, cb[3].weight, cb[3].bias).reshape(B, C, K * K)
        cf = standardise(cf, 2) * cb[4].std.reshape(C, K * K)
        if guided:
            sf = F.conv2d(guide, sb[0].weight, sb[0].bias)
        else:
            dw = F.conv2d(guide, sb[0].weight, sb[0].bias, padding=dw_kernel_size // 2, groups=C)
            sf = F.conv2d(dw, sb[1][0].weight, sb[1][0].bias)
        sf = standardise(sf.reshape(B, G, K * K, H, W), 2).reshape(B, G * K * K, H, W) / K
        i, j = divmod(p, r)
        out[:, :, i::r, j::r] = ddf_reference(x, cf.reshape(B, C, K, K), sf, K, d, 1,
                                              m.kernel_combine)
    return out


# (B, C, H, W, K, r, dilation, head, combine, dw_kernel_size, joint_channels)
CASES = [
    (2, 4, 5, 7, 3, 2, 1, 1, 'mul', 3, -1),
    (1, 6, 3, 4, 3, 3, 2, 2, 'add', 5, -1),  # dw_kernel_size != K: the release's padding breaks
    (2, 4, 5, 3, 5, 2, 1, 2, 'mul', 3, 3),  # guided
    (1, 6, 4, 5, 3, 2, 1, 3, 'add', 3, 6),  # guided, as many guidance channels as input ones
]


@pytest.mark.parametrize('B,C,H,W,K,r,d,head,combine,dw,joint', CASES)
def test_forward_equals_the_definition(B, C, H, W, K, r, d, head, combine, dw, joint):
    torch.manual_seed(0)
    m = DDFUpPack(C, K, r, d, head, se_ratio=0.5, dw_kernel_size=dw, joint_channels=joint,
                  kernel_combine=combine).double()
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    guide = torch.randn(B, joint, H, W, dtype=torch.float64) if joint > 0 else None
    with torch.no_grad():
        out = m(x, guide)
        want = reference_up(m, x, guide, dw)
    assert out.shape == (B, C, r * H, r * W)
    torch.testing.assert_close(out, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('joint', [-1, 5])
def test_doubles_odd_sizes(joint):
    m = DDFUpPack(8, joint_channels=joint)
    x = torch.randn(2, 8, 7, 9)
    guide = torch.randn(2, 5, 7, 9) if joint > 0 else None
    assert m(x, guide).shape == (2, 8, 14, 18)


@pytest.mark.parametrize('joint', [-1, 3])
def test_parameters_have_the_release_names_and_shapes(joint):
    m = DDFUpPack(10, kernel_size=3, scale_factor=2, head=1, se_ratio=0.2, dw_kernel_size=5,
                  joint_channels=joint)
    got = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert got == release_layout(10, 3, 2, 1, 0.2, 5, joint)


def test_gradcheck():
    torch.manual_seed(0)
    m = DDFUpPack(2, se_ratio=0.5, head=2, kernel_combine='mul').double()
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x, ), eps=1e-6, atol=1e-6)
    g = DDFUpPack(2, se_ratio=0.5, joint_channels=2, kernel_combine='add').double()
    guide = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(g, (x, guide), eps=1e-6, atol=1e-6)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match='dw_kernel_size'):
        DDFUpPack(8, dw_kernel_size=4)
    with pytest.raises(ValueError, match='scale_factor'):
        DDFUpPack(8, scale_factor=0)
    with pytest.raises(ValueError, match='guidance'):
        DDFUpPack(8, joint_channels=2)(torch.randn(1, 8, 5, 5), torch.randn(1, 2, 10, 10))


# DDFUpFPN, through mmdet

def _registry():
    import mmelsa  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS


def _config():
    from mmengine.config import Config
    return Config.fromfile(CONFIG)


def _build(cfg):
    from mmengine.registry import DefaultScope
    models = _registry()
    with DefaultScope.overwrite_default_scope('mmdet'):
        return models.build(cfg)


def _pyramid(in_channels, sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, c, h, w, generator=gen) for c, (h, w) in zip(in_channels, sizes)]


def _resnet_sizes(H, W):
    """The four ResNet levels' sizes (strides 4..32) of an H x W image."""
    sizes, h, w = [], -(-H // 4), -(-W // 4)
    for _ in range(4):
        sizes.append((h, w))
        h, w = -(-h // 2), -(-w // 2)
    return sizes


def test_config_builds_the_ddf_up_fpn():
    cfg = _config()
    assert cfg.custom_imports == dict(imports=['mmelsa'], allow_failed_imports=False)
    assert cfg.runner_type == 'SafeRunner'
    neck = _build(cfg.model.neck)
    assert type(neck).__name__ == 'DDFUpFPN'
    assert (neck.in_channels, neck.out_channels, neck.num_outs) == ([256, 512, 1024, 2048],
                                                                    256, 5)
    assert len(neck.upsample_modules) == 3
    assert all(type(m) is DDFUpPack and m.scale_factor == 2 for m in neck.upsample_modules)


@pytest.mark.parametrize('sizes', [
    _resnet_sizes(128, 160),
    _resnet_sizes(100, 75),  # odd sizes: DDF-Up's x2 is one larger, cropped
    [(21, 20), (9, 11), (4, 6), (3, 2)],  # not a factor 2 apart: edge-padded
])
def test_outputs_have_mmdets_fpn_shapes(sizes):
    torch.manual_seed(0)
    cfg = _config().model.neck
    neck = _build(cfg)
    fpn = _build(dict({k: v for k, v in cfg.items() if k != 'ddf_up_cfg'}, type='FPN'))
    # mmdet's FPN parameters keep their names and shapes: an FPN checkpoint loads into them.
    shapes = {k: v.shape for k, v in neck.state_dict().items()}
    assert all(shapes.get(k) == v.shape for k, v in fpn.state_dict().items())
    inputs = _pyramid(cfg.in_channels, sizes)
    with torch.no_grad():
        got, want = neck(inputs), fpn(inputs)
    assert [o.shape for o in got] == [o.shape for o in want]
    assert all(torch.isfinite(o).all() for o in got)


def test_top_down_adds_the_cropped_ddf_up_of_the_level_above():
    torch.manual_seed(0)
    neck = _build(dict(type='DDFUpFPN', in_channels=[4, 8], out_channels=6, num_outs=2,
                       ddf_up_cfg=dict(kernel_combine='add', head=2)))
    inputs = _pyramid([4, 8], [(7, 9), (4, 5)])
    with torch.no_grad():
        outs = neck(inputs)
        lat0, lat1 = (conv(x) for conv, x in zip(neck.lateral_convs, inputs))
        up = neck.upsample_modules[0](lat1)
        assert up.shape[2:] == (8, 10)
        torch.testing.assert_close(outs[0], neck.fpn_convs[0](lat0 + up[:, :, :7, :9]))
        torch.testing.assert_close(outs[1], neck.fpn_convs[1](lat1))


def test_rejects_upsample_cfg():
    with pytest.raises(TypeError, match='upsample_cfg'):
        _build(dict(type='DDFUpFPN', in_channels=[4, 8], out_channels=6, num_outs=2,
                    upsample_cfg=dict(mode='bilinear')))


@pytest.mark.slow
def test_faster_rcnn_from_the_config_takes_a_training_step():
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import InstanceData
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes

    cfg = _config()
    cfg.model.backbone.init_cfg = None  # no ImageNet download: the initial weights do here
    torch.manual_seed(0)
    model = revert_sync_batchnorm(_build(cfg.model))
    assert type(model.neck).__name__ == 'DDFUpFPN'
    H, W = 128, 160
    sample = DetDataSample(metainfo=dict(img_id=0, img_shape=(H, W), ori_shape=(H, W),
                                         pad_shape=(H, W), scale_factor=(1., 1.)))
    gt = InstanceData()
    gt.bboxes = HorizontalBoxes(torch.tensor([[20., 30., 90., 100.], [60., 10., 150., 70.]]))
    gt.labels = torch.tensor([3, 17])
    sample.gt_instances = gt
    data = dict(inputs=[torch.randint(0, 256, (3, H, W), dtype=torch.uint8)],
                data_samples=[sample])
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.01)))
    weight = model.neck.upsample_modules[0].spatial_branch[0][1][0].weight
    before = weight.detach().clone()
    model.train()
    losses = model.train_step(data, wrapper)
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert not torch.equal(before, weight.detach())  # DDF-Up learns


def test_import_mmelsa_leaves_mmdet_unimported():
    import subprocess
    import sys
    code = "import sys, mmelsa; assert 'mmdet' not in sys.modules, 'mmdet imported'"
    subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)
