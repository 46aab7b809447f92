"""ELSASwinTransformer takes mmpretrain's SwinTransformer arguments with mmpretrain's meaning, so
that mmpretrain's own Swin config with only the backbone type changed builds and classifies; and
the checks of mmpretrain's Swin unit tests (tests/test_models/test_backbones/
test_swin_transformer.py upstream) that apply to ELSA-Swin, run against it. Sizes are reduced
(a small custom arch, small inputs) to keep them cheap on a CPU."""
import glob
import math
import os.path as osp

import pytest
import torch

from mmelsa.models import ELSASwinTransformer

pytest.importorskip('mmpretrain')

SMALL = dict(embed_dims=24, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4])


def mmpretrain_config(name):
    import mmpretrain
    hits = glob.glob(osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs', '**', name),
                     recursive=True)
    assert len(hits) == 1, hits
    return hits[0]


def test_mmpretrain_swin_config_with_only_the_type_changed_builds_and_classifies():
    import mmelsa  # noqa: F401
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(mmpretrain_config('swin-tiny_16xb64_in1k.py'))
    assert cfg.model.backbone.type == 'SwinTransformer'
    cfg.model.backbone.type = 'ELSASwinTransformer'
    model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert isinstance(backbone, ELSASwinTransformer)
    # mmpretrain's defaults: the last stage only (no unused norms for DDP to trip on)
    assert backbone.out_indices == (3, ) and not hasattr(backbone, 'norm0')
    assert backbone.arch_settings['group_width'] == 4  # ELSA-Swin-T
    model.init_weights()
    model.eval()
    # 224 px: with mmpretrain's pad_small_map=False, as in mmpretrain's own Swin, a last-stage
    # map smaller than the window is refused
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 224, 224))
        logits = model(torch.randn(2, 3, 224, 224), mode='tensor')
    assert len(feats) == 1 and feats[0].shape == (1, 768, 7, 7)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def test_arch_dict_and_strings():
    model = ELSASwinTransformer(arch=dict(SMALL), img_size=64)
    assert model.arch_settings['depths'] == (1, 1, 2, 1) and model.out_indices == (3, )
    assert [len(s.blocks) for s in model.layers] == [1, 1, 2, 1]
    with_gw = ELSASwinTransformer(arch=dict(SMALL, group_width=8))
    assert with_gw.group_width == 8
    for arch, exc, match in [('unknown', ValueError, 'arch must be one of'),
                             ('large', ValueError, 'arch must be one of'),
                             (dict(embed_dims=96, num_heads=[3, 6, 12, 16]), ValueError,
                              'arch as a dict needs'),
                             (dict(SMALL, window=3), ValueError, 'arch as a dict')]:
        with pytest.raises(exc, match=match):
            ELSASwinTransformer(arch=arch)
    with pytest.raises(ValueError, match='conflicts with arch'):
        ELSASwinTransformer(arch=dict(SMALL), embed_dims=32)


def test_forward_shapes_like_mmpretrains_swin():
    """Default: one output, the last stage; out_indices (0..3): strides 1, 2, 4, 8 of the first
    map; any input size: ceil(size / 32)."""
    # pad_small_map=True: 64 px gives 2x2 maps in stage 3, which mmpretrain's default refuses
    model = ELSASwinTransformer(arch=dict(SMALL), img_size=64, patch_size=4,
                                pad_small_map=True).eval()
    with torch.no_grad():
        for size in [(64, 64), (72, 72), (72, 83)]:
            outs = model(torch.randn(1, 3, *size))
            assert isinstance(outs, tuple) and len(outs) == 1
            assert outs[0].shape == (1, 192, *(math.ceil(s / 32) for s in size))
        model = ELSASwinTransformer(arch=dict(SMALL), img_size=64, pad_small_map=True,
                                    out_indices=(0, 1, 2, 3)).eval()
        outs = model(torch.randn(1, 3, 64, 64))
    assert len(outs) == 4
    for stride, out in zip([1, 2, 4, 8], outs):
        assert out.shape == (1, 24 * stride, 16 // stride, 16 // stride)


def test_window_size_and_pad_small_map():
    """A window larger than the late maps: padded with pad_small_map=True, as mmpretrain's
    Swin does; refused by name with its default False, as mmpretrain's Swin refuses it."""
    model = ELSASwinTransformer(arch=dict(SMALL), img_size=64, window_size=6,
                                pad_small_map=True).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 192, 2, 2)
    model = ELSASwinTransformer(arch=dict(SMALL), img_size=64, window_size=6).eval()
    with pytest.raises(ValueError, match='smaller than the window.*pad_small_map=True'):
        model(torch.randn(1, 3, 64, 64))


def test_with_cp_drop_path_decay_and_drop_rate():
    model = ELSASwinTransformer(arch=dict(SMALL), img_size=64, with_cp=True, pad_small_map=True,
                                drop_path_rate=0.2, drop_rate=0.1)
    assert all(stage.with_cp for stage in model.layers)
    blocks = [b for stage in model.layers for b in stage.blocks]
    for i, block in enumerate(blocks):
        assert block.drop_path.drop_prob == pytest.approx(0.2 / (len(blocks) - 1) * i)
    # mmpretrain's drop_rate is the dropout after the patch embedding only
    assert model.drop_after_pos.p == 0.1
    assert all(m.p == 0 for b in blocks for m in b.modules() if isinstance(m, torch.nn.Dropout))
    model.train()
    out = model(torch.randn(1, 3, 64, 64))[0]
    out.sum().backward()
    assert model.patch_embed.proj.weight.grad is not None


@pytest.mark.parametrize('frozen_stages', [0, 2])
def test_frozen_stages_count_as_in_mmpretrain(frozen_stages):
    """mmpretrain: frozen_stages=i freezes the patch embedding and stages 0..i (with their
    output norms); mmdet / mmseg: stages < i. The mmpretrain names select mmpretrain's count."""
    model = ELSASwinTransformer(arch=dict(SMALL), img_size=64, frozen_stages=frozen_stages,
                                out_indices=(0, 1, 2, 3))
    model.init_weights()
    model.train()
    assert not model.patch_embed.training
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    for i in range(4):
        frozen = i <= frozen_stages
        params = list(model.layers[i].parameters()) + list(getattr(model, f'norm{i}')
                                                          .parameters())
        assert all(p.requires_grad != frozen for p in params), i
        assert model.layers[i].training != frozen
    # the same number under mmdet's names keeps its mmdet meaning
    mmdet_style = ELSASwinTransformer(**SMALL, frozen_stages=1)
    assert not any(p.requires_grad for p in mmdet_style.layers[0].parameters())
    assert all(p.requires_grad for p in mmdet_style.layers[1].parameters())


def test_norm_eval_interpolate_mode_and_empty_extra_cfgs_are_accepted():
    model = ELSASwinTransformer(arch='tiny', img_size=224, norm_eval=True,
                                interpolate_mode='bicubic', stage_cfgs=dict(),
                                patch_cfg=dict(), out_after_downsample=False,
                                norm_cfg=dict(type='LN'), init_cfg=None, in_channels=3)
    model.train()  # no BatchNorm in ELSA-Swin: nothing to keep in eval mode
    assert model.training and model.norm_eval is True
    ELSASwinTransformer(arch='t', stage_cfgs=[dict()] * 4)


@pytest.mark.parametrize('kwargs, match', [
    (dict(out_after_downsample=True), 'out_after_downsample=True'),
    (dict(stage_cfgs=dict(block_cfgs=dict(norm_cfg=dict(type='BN')))), 'stage_cfgs'),
    (dict(stage_cfgs=[dict(), dict(downsample_cfg=dict(kernel_size=3)), dict(), dict()]),
     'stage_cfgs'),
    (dict(patch_cfg=dict(kernel_size=7)), 'patch_cfg'),
    (dict(interpolate_mode='cubic-ish'), 'interpolate_mode'),
    (dict(img_size=64, pretrain_img_size=32), 'img_size'),
    (dict(norm_eval='yes'), 'norm_eval'),
    (dict(frozen_stages=4), 'frozen_stages'),
])
def test_mmpretrain_arguments_without_meaning_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ELSASwinTransformer(**{'arch': dict(SMALL), 'img_size': 64, **kwargs})


def test_img_size_sizes_the_absolute_position_embedding():
    model = ELSASwinTransformer(arch=dict(SMALL), img_size=64, pad_small_map=True,
                                use_abs_pos_embed=True,
                                interpolate_mode='bicubic')
    assert model.absolute_pos_embed.shape == (1, 16 * 16, 24)
    assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 192, 2, 2)


@pytest.mark.parametrize('args', [
    dict(),
    dict(out_indices=(0, 1, 2, 3), frozen_stages=1),
    dict(out_indices=(1, 3), frozen_stages=3, window_size=4),
    dict(frozen_stages=0, use_abs_pos_embed=True, patch_size=4),
])
def test_same_arguments_same_outputs_and_freezing_as_mmpretrains_swin(args):
    """Side by side with mmpretrain's SwinTransformer built from the same arguments: the same
    outputs (number, shapes, for two input sizes), the same frozen stages, output norms and
    patch embedding, the same absolute position embedding shape."""
    from mmpretrain.models.backbones import SwinTransformer
    # pad_small_map=True: 64 px gives 2x2 maps in stage 3, which mmpretrain's default refuses
    args = dict(arch=dict(SMALL), img_size=64, pad_small_map=True, **args)
    theirs, ours = SwinTransformer(**args), ELSASwinTransformer(**args)
    for model in (theirs, ours):
        model.init_weights()
        model.train()
    sizes = [(64, 64)] if args.get('use_abs_pos_embed') else [(64, 64), (72, 83)]
    with torch.no_grad():
        for size in sizes:
            x = torch.randn(1, 3, *size)
            assert [o.shape for o in theirs(x)] == [o.shape for o in ours(x)], size
    for i in range(4):
        assert all(p.requires_grad for p in theirs.stages[i].parameters()) == \
            all(p.requires_grad for p in ours.layers[i].parameters()), i
        assert theirs.stages[i].training == ours.layers[i].training, i
        if hasattr(theirs, f'norm{i}'):
            assert [p.requires_grad for p in getattr(theirs, f'norm{i}').parameters()] == \
                [p.requires_grad for p in getattr(ours, f'norm{i}').parameters()], i
        else:
            assert not hasattr(ours, f'norm{i}')
    assert [p.requires_grad for p in theirs.patch_embed.parameters()] == \
        [p.requires_grad for p in ours.patch_embed.parameters()]
    if args.get('use_abs_pos_embed'):
        assert theirs.absolute_pos_embed.shape == ours.absolute_pos_embed.shape
