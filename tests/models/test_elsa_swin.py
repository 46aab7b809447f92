"""ELSASwinTransformer: outputs against the independent float64 reference, official layout,
parameter counts, checkpointing, freezing, argument checks and initialisation."""
import json
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmelsa.models import ELSASwinTransformer
from mmelsa.models.elsa_swin import SwinBlock
from tests.models.elsa_swin_reference import (backbone_ref, random_state_dict,
                                              swin_block_ref)

# Every key and shape of the official checkpoints (tiny / small / base), kept with the tests.
OFFICIAL_KEYS = os.path.join(os.path.dirname(__file__), 'data', 'elsa_swin_official_keys.json')


def _official():
    with open(OFFICIAL_KEYS) as f:
        return json.load(f)


def small_model(**kwargs):
    """A narrow ELSA-Swin (embed_dims 24) that runs in well under a second on a CPU."""
    args = dict(embed_dims=24, depths=(2, 1, 2, 2), num_heads=(1, 2, 2, 4), group_width=4,
                drop_path_rate=0.)
    args.update(kwargs)
    return ELSASwinTransformer(**args)


# --------------------------------------------------------------------------- reference
@pytest.mark.parametrize('kernel_size,window,size,batch', [
    (7, 7, (45, 61), 1),
    (5, 3, (97, 131), 2),
    (5, 7, (33, 30), 1),
])
def test_backbone_matches_reference(kernel_size, window, size, batch):
    torch.manual_seed(0)
    model = small_model(elsa_kernel_size=kernel_size, window_size=window).double().eval()
    sd = random_state_dict(model, seed=kernel_size + window)
    model.load_state_dict(sd, strict=True)
    img = torch.randn(batch, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        outs = model(img)
    refs = backbone_ref(img, sd, depths=(2, 1, 2, 2), num_heads=(1, 2, 2, 4),
                        kernel_size=kernel_size, window=window)
    h, w = size
    assert len(outs) == 4
    for i, (o, r) in enumerate(zip(outs, refs)):
        h, w = (-(-h // 4), -(-w // 4)) if i == 0 else (-(-h // 2), -(-w // 2))
        assert o.shape == (batch, 24 * 2**i, h, w)
        torch.testing.assert_close(o, r, rtol=1e-9, atol=1e-9, msg=f'output {i}')


@pytest.mark.parametrize('lam,gamma', [(2., 0.5), (1., 0.)])
def test_backbone_ghost_modes_match_reference(lam, gamma):
    model = small_model(elsa_kernel_size=5, lam=lam, gamma=gamma, depths=(1, 1, 1, 1),
                        out_indices=(1, 3)).double().eval()
    sd = random_state_dict(model, seed=7)
    model.load_state_dict(sd, strict=True)
    img = torch.randn(1, 3, 37, 29, dtype=torch.float64)
    with torch.no_grad():
        outs = model(img)
    refs = backbone_ref(img, sd, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), kernel_size=5,
                        lam=lam, gamma=gamma, out_indices=(1, 3))
    for o, r in zip(outs, refs):
        torch.testing.assert_close(o, r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('size', [(10, 17), (4, 4), (8, 8)])
def test_shifted_window_block_matches_reference(size):
    """Several windows, padding and the shift mask, on one Swin block (window 4, shift 2)."""
    torch.manual_seed(0)
    for shift in (False, True):
        blk = SwinBlock(16, 2, window_size=4, shift=shift).double().eval()
        sd = random_state_dict(blk, seed=int(shift))
        blk.load_state_dict(sd)
        x = torch.randn(2, *size, 16, dtype=torch.float64)
        ref = swin_block_ref(x, {'b.' + k: v for k, v in sd.items()}, 'b', 2, 4, shift)
        torch.testing.assert_close(blk(x), ref, rtol=1e-10, atol=1e-10)


def _subnormal_count(t):
    return int(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).sum())


@settings(max_examples=25, deadline=None)
@given(height=st.integers(5, 15), width=st.integers(5, 15), seed=st.integers(0, 2**16))
def test_shifted_window_attention_makes_no_subnormal_floats(height, width, seed):
    """Masked pairs get a weight of exactly 0. With the release's -100 they got e^-100, a
    subnormal float32, and the zero-padded tokens of a block with zero biases (as initialised)
    came out of the attention as subnormals, which ran the next Linear 33x slower on x86."""
    torch.manual_seed(seed)
    blk = SwinBlock(16, 2, window_size=4, shift=True).eval()
    for m in blk.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.zeros_(m.bias)
    seen = []
    blk.attn.post_proj.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    with torch.no_grad():
        out = blk(torch.randn(1, height, width, 16))
    assert _subnormal_count(seen[0]) == 0
    assert _subnormal_count(out) == 0


def test_elsa_stages_and_patch_size_options():
    # all stages ELSA, patch size 2 (strides follow)
    model = small_model(elsa_stages=(0, 1, 2, 3), patch_size=2, strides=(2, 2, 2, 2),
                        depths=(1, 1, 1, 1), elsa_kernel_size=3).double().eval()
    sd = random_state_dict(model, seed=2)
    model.load_state_dict(sd)
    img = torch.randn(1, 3, 21, 18, dtype=torch.float64)
    with torch.no_grad():
        outs = model(img)
    refs = backbone_ref(img, sd, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), kernel_size=3,
                        elsa_stages=(0, 1, 2, 3), patch=2)
    assert outs[0].shape[-2:] == (11, 9)
    for o, r in zip(outs, refs):
        torch.testing.assert_close(o, r, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- official layout
@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_official_state_dict_layout_and_param_count(arch):
    official = _official()[arch]
    model = ELSASwinTransformer(arch=arch)
    assert sum(p.numel() for p in model.parameters()) == official['params']
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(keys) == list(official['keys'])  # same names, same order
    assert keys == official['keys']


def test_swin_config_values_select_the_official_variant():
    # A Swin-T/S/B config swapped to ELSA-Swin (no arch, no group_width) gets the official
    # variant's group width, so the official checkpoints fit.
    resolve = ELSASwinTransformer._resolve_arch
    assert resolve(None, 96, [2, 2, 6, 2], [3, 6, 12, 24], None) == \
        (96, (2, 2, 6, 2), (3, 6, 12, 24), 4)
    assert resolve(None, 96, [2, 2, 18, 2], [3, 6, 12, 24], None)[3] == 8
    assert resolve(None, 128, [2, 2, 18, 2], [4, 8, 16, 32], None)[3] == 8
    assert resolve(None, 192, [2, 2, 18, 2], [6, 12, 24, 48], None)[3] == 8  # Swin-L: 8
    assert resolve(None, 96, None, None, 2)[3] == 2  # explicit wins
    assert resolve(None, None, None, None, None) == resolve('tiny', None, None, None, None)


# --------------------------------------------------------------------------- training
def _loss(outs):
    return sum((o * torch.linspace(-1, 1, o.numel(), device=o.device,
                                   dtype=o.dtype).view_as(o)).sum() for o in outs)


def test_forward_backward_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = small_model(drop_path_rate=0.2, drop_rate=0.1, attn_drop_rate=0.1).train()
    img = torch.randn(1, 3, 50, 43, requires_grad=True)
    _loss(model(img)).backward()
    assert torch.isfinite(img.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_with_cp_same_outputs_and_gradients():
    torch.manual_seed(0)
    ref = small_model(drop_path_rate=0.3, drop_rate=0.1, attn_drop_rate=0.1).double().train()
    cp_model = small_model(drop_path_rate=0.3, drop_rate=0.1, attn_drop_rate=0.1,
                           with_cp=True).double().train()
    cp_model.load_state_dict(ref.state_dict())
    img = torch.randn(1, 3, 37, 45, dtype=torch.float64)
    grads = []
    for model in (ref, cp_model):
        torch.manual_seed(123)  # same dropout / drop-path draws
        outs = model(img)
        _loss(outs).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-10, atol=1e-12, msg=n)


def _saved_activation_bytes(model, img):
    """Bytes of the tensors autograd keeps for backward (what with_cp trades for compute)."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = model(img)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    total = sum(b for (ptr, _), b in seen.items() if ptr not in params)
    return total, outs


def test_with_cp_lowers_training_memory():
    torch.manual_seed(0)
    img = torch.randn(1, 3, 96, 96)
    plain = small_model().train()
    cp_model = small_model(with_cp=True).train()
    cp_model.load_state_dict(plain.state_dict())
    b_plain, _ = _saved_activation_bytes(plain, img)
    b_cp, outs = _saved_activation_bytes(cp_model, img)
    assert b_cp < 0.25 * b_plain, (b_cp, b_plain)
    _loss(outs).backward()  # and it still trains
    assert all(p.grad is not None for p in cp_model.parameters())


@pytest.mark.parametrize('frozen_stages', [0, 2])
def test_frozen_stages(frozen_stages):
    torch.manual_seed(0)
    model = small_model(frozen_stages=frozen_stages, drop_path_rate=0.5,
                        out_indices=(0, 1, 3))
    model.train()
    frozen = ['patch_embed.'] + [f'layers.{i}.' for i in range(frozen_stages)] + \
        [f'norm{i}.' for i in range(frozen_stages)]
    assert not model.patch_embed.training
    for i, layer in enumerate(model.layers):
        assert layer.training == (i >= frozen_stages)
    img = torch.randn(1, 3, 40, 40)
    outs = model(img)
    _loss(outs).backward()
    for name, p in model.named_parameters():
        if name.startswith(tuple(frozen)):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None, name
    if frozen_stages == 2:
        # frozen stages stay in eval mode across train(): no drop path there
        model.train()
        torch.testing.assert_close(model(img)[0], model(img)[0])
        assert not torch.equal(model(img)[2], model(img)[2])


def test_batch_one_tiny_odd_inputs_and_out_indices():
    model = small_model(out_indices=(1, 2)).eval()
    for size in [(1, 1), (3, 5), (31, 7), (65, 33)]:
        outs = model(torch.randn(1, 3, *size))
        assert [o.shape[1] for o in outs] == [48, 96]
        h = -(-size[0] // 4)
        assert outs[0].shape[-2] == -(-h // 2)
    assert not hasattr(model, 'norm0') and hasattr(model, 'norm1')
    with pytest.raises(ValueError, match='B, C, H, W'):
        model(torch.randn(3, 32, 32))


# --------------------------------------------------------------------------- arguments
@pytest.mark.parametrize('kwargs,exc,match', [
    (dict(use_abs_pos_embed=True, pretrain_img_size=3), ValueError, 'pretrain_img_size'),
    (dict(use_abs_pos_embed=True, pretrain_img_size=(64, 64, 3)), ValueError,
     'pretrain_img_size'),
    (dict(strides=(4, 2, 2, 1)), ValueError, 'strides'),
    (dict(patch_size=2), ValueError, 'strides'),
    (dict(strides=(4, 2, 2)), ValueError, 'strides'),
    (dict(out_indices=(0, 4)), ValueError, 'out_indices'),
    (dict(frozen_stages=5), ValueError, 'frozen_stages'),
    (dict(norm_cfg=dict(type='BN')), ValueError, 'norm_cfg'),
    (dict(act_cfg=dict(type='NoSuchAct')), ValueError, 'act_cfg'),
    (dict(num_heads=(1, 2, 2)), ValueError, 'num_heads'),
    (dict(num_heads=(5, 2, 2, 4)), ValueError, 'num_heads'),
    (dict(elsa_kernel_size=4), ValueError, 'kernel_size'),
    (dict(elsa_stages=(0, 4)), ValueError, 'elsa_stages'),
    (dict(arch='huge'), ValueError, 'arch'),
    (dict(arch='tiny'), ValueError, 'embed_dims=24 conflicts with arch'),
    (dict(pretrained=3), TypeError, 'pretrained'),
    (dict(pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth')),
     ValueError, 'init_cfg and pretrained'),
    (dict(no_such_argument=1), TypeError, 'no_such_argument'),
    (dict(drop_path_rate=1.5), ValueError, r'drop_path_rate must be in \[0, 1\]'),
    (dict(elsa_dilation=2.0), TypeError, 'dilation must be an int'),
])
def test_bad_arguments_raise_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        small_model(**kwargs)


def test_drop_path_rate_one_drops_branches_without_nan():
    """The last block's rate is drop_path_rate: at 1.0 its branches are dropped (zeros, as
    in timm), not 0 / 0 (failed before: NaN outputs in training mode)."""
    model = small_model(drop_path_rate=1.0).train()
    outs = model(torch.randn(2, 3, 32, 32))
    assert all(torch.isfinite(o).all() for o in outs)
    from mmelsa.models.utils import DropPath
    x = torch.randn(4, 5)
    assert torch.equal(DropPath(1.0).train()(x), torch.zeros_like(x))


def test_accepts_every_swin_argument():
    """Every mmdet/mmseg SwinTransformer argument, with non-default but supported values."""
    model = ELSASwinTransformer(
        pretrain_img_size=(384, 384), in_channels=4, embed_dims=24, patch_size=4,
        window_size=5, mlp_ratio=2, depths=(1, 1, 1, 2), num_heads=(1, 2, 2, 4),
        strides=(4, 2, 2, 2), out_indices=[3], qkv_bias=False, qk_scale=0.3, patch_norm=False,
        drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.2, use_abs_pos_embed=False,
        act_cfg=dict(type='ReLU', inplace=True),
        norm_cfg=dict(type='LN', eps=1e-6, requires_grad=True),
        with_cp=True, pretrained=None, convert_weights=True, frozen_stages=1, init_cfg=None,
        group_width=8)
    sd = model.state_dict()
    assert 'patch_embed.norm.weight' not in sd and 'layers.0.downsample.norm.weight' not in sd
    assert 'layers.0.blocks.0.attn.pre_proj.bias' not in sd
    assert 'layers.3.blocks.0.attn.pre_proj.bias' not in sd
    assert model.layers[3].blocks[0].attn.scale == 0.3
    assert model.layers[0].blocks[0].mlp.fc1.out_features == 48
    assert model.norm3.eps == 1e-6
    outs = model(torch.randn(1, 4, 40, 40))
    assert len(outs) == 1 and outs[0].shape == (1, 192, 2, 2)


# --------------------------------------------------------------------------- abs. position
@pytest.mark.parametrize('pretrain_img_size,size', [((48, 64), (48, 64)), ((48, 64), (46, 63)),
                                                    (40, (40, 37))])
def test_abs_pos_embed_matches_reference(pretrain_img_size, size):
    """The embedding is added after the patch norm, one row per patch, row-major; an input
    padded up to the pretraining grid (46x63 -> 12x16 patches) uses it too."""
    model = small_model(use_abs_pos_embed=True, pretrain_img_size=pretrain_img_size,
                        elsa_kernel_size=5, window_size=3).double().eval()
    sd = random_state_dict(model, seed=3)
    h, w = (pretrain_img_size, ) * 2 if isinstance(pretrain_img_size, int) else \
        pretrain_img_size
    assert sd['absolute_pos_embed'].shape == (1, (h // 4) * (w // 4), 24)
    model.load_state_dict(sd, strict=True)
    img = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        outs = model(img)
    refs = backbone_ref(img, sd, depths=(2, 1, 2, 2), num_heads=(1, 2, 2, 4), kernel_size=5,
                        window=3)
    for i, (o, r) in enumerate(zip(outs, refs)):
        torch.testing.assert_close(o, r, rtol=1e-9, atol=1e-9, msg=f'output {i}')
    # and it matters: without the embedding the reference gives something else
    del sd['absolute_pos_embed']
    plain = backbone_ref(img, sd, depths=(2, 1, 2, 2), num_heads=(1, 2, 2, 4), kernel_size=5,
                         window=3)
    assert (outs[0] - plain[0]).abs().max() > 1e-2


def test_abs_pos_embed_refuses_another_patch_grid():
    model = small_model(use_abs_pos_embed=True, pretrain_img_size=64).eval()
    model(torch.randn(1, 3, 61, 64))  # 16x16 patches: fits
    with pytest.raises(ValueError, match=r'use_abs_pos_embed: the input gives a 17x16 patch '
                                         r'grid, but the absolute position embedding has 16x16'):
        model(torch.randn(1, 3, 65, 64))


def test_abs_pos_embed_trains_initialises_and_freezes_like_swin():
    torch.manual_seed(0)
    model = small_model(use_abs_pos_embed=True, pretrain_img_size=32, drop_rate=0.1).train()
    model.absolute_pos_embed.data.fill_(0.5)
    model.init_weights()
    ape = model.absolute_pos_embed
    assert abs(ape.std().item() - 0.02) < 0.004 and ape.abs().max() < 0.2
    _loss(model(torch.randn(1, 3, 32, 32))).backward()
    assert ape.grad is not None and ape.grad.abs().sum() > 0
    frozen = small_model(use_abs_pos_embed=True, pretrain_img_size=32, frozen_stages=0).train()
    assert not frozen.absolute_pos_embed.requires_grad
    assert list(frozen.state_dict())[0] == 'absolute_pos_embed'


@pytest.mark.parametrize('package', ['mmdet', 'mmseg'])
def test_abs_pos_embed_drop_in_for_swin(package):
    """The arguments mmdet's / mmseg's SwinTransformer take give the same parameter (name,
    shape), and the same embedded tokens for the same patch embedding weights."""
    import importlib
    swin_cls = importlib.import_module(f'{package}.models.backbones.swin').SwinTransformer
    args = dict(pretrain_img_size=(32, 48), embed_dims=24, depths=(1, 1, 1, 1),
                num_heads=(1, 2, 2, 4), use_abs_pos_embed=True, drop_rate=0.1)
    torch.manual_seed(0)
    swin = swin_cls(**args).double()
    swin.init_weights()
    swin.eval()  # (mmdet's / mmseg's Swin.train returns None, so not chained)
    ours = ELSASwinTransformer(**args).double().eval()
    assert ours.absolute_pos_embed.shape == swin.absolute_pos_embed.shape == (1, 8 * 12, 24)
    ours.load_state_dict({
        'absolute_pos_embed': swin.absolute_pos_embed,
        'patch_embed.proj.weight': swin.patch_embed.projection.weight,
        'patch_embed.proj.bias': swin.patch_embed.projection.bias,
        'patch_embed.norm.weight': swin.patch_embed.norm.weight,
        'patch_embed.norm.bias': swin.patch_embed.norm.bias}, strict=False)
    tokens = {}
    for name, model in (('swin', swin), ('ours', ours)):
        model.drop_after_pos.register_forward_hook(
            lambda m, i, o, name=name: tokens.__setitem__(name, o))
        with torch.no_grad():
            model(torch.randn(1, 3, 30, 45, dtype=torch.float64,
                              generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(tokens['ours'].reshape(1, -1, 24), tokens['swin'],
                               rtol=1e-12, atol=1e-12)


def test_arch_presets():
    resolve = ELSASwinTransformer._resolve_arch
    assert resolve('s', None, None, None, None) == (96, (2, 2, 18, 2), (3, 6, 12, 24), 8)
    assert resolve('base', None, None, None, None) == (128, (2, 2, 18, 2), (4, 8, 16, 32), 8)
    # consistent explicit values are fine
    assert resolve('tiny', 96, [2, 2, 6, 2], None, 4)[3] == 4
    with pytest.raises(ValueError, match='group_width=8 conflicts'):
        resolve('tiny', None, None, None, 8)


# --------------------------------------------------------------------------- init
def test_default_initialisation():
    torch.manual_seed(0)
    model = ELSASwinTransformer(depths=(1, 1, 2, 2))  # tiny widths, fewer blocks
    for p in model.parameters():
        p.data.fill_(0.5)  # init_weights must overwrite everything it owns
    model.init_weights()
    lin = model.layers[2].blocks[0].mlp.fc1
    assert abs(lin.weight.std().item() - 0.02) < 0.002 and lin.weight.abs().max() < 2
    assert torch.count_nonzero(lin.bias) == 0
    ln = model.layers[1].blocks[0].norm2
    assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)
    rb = torch.cat([model.layers[3].blocks[i].attn.rb.flatten() for i in range(2)])
    assert abs(rb.std().item() - 0.02) < 0.004
    gh = torch.cat([b.attn.ghost_head.flatten() for b in model.layers[2].blocks])
    assert abs(gh.std().item() - 0.02) < 0.002 and abs(gh.mean().item()) < 0.002
    # convolutions keep their PyTorch init from construction (init_weights, like mmdet's
    # Swin, re-initialises only Linear/LayerNorm and the ELSA/Swin-specific tables)
    assert torch.all(model.layers[0].blocks[0].attn.pre_proj.weight == 0.5)
    assert torch.equal(model.layers[3].blocks[0].attn.relative_id,
                       model.layers[3].blocks[1].attn.relative_id)


# --------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
def test_cuda_matches_reference_amp_and_with_cp_saves_memory():
    torch.manual_seed(0)
    model = small_model(elsa_kernel_size=5, window_size=3).double().eval()
    sd = random_state_dict(model, seed=11)
    model.load_state_dict(sd)
    img = torch.randn(2, 3, 97, 131, dtype=torch.float64)
    refs = backbone_ref(img, sd, depths=(2, 1, 2, 2), num_heads=(1, 2, 2, 4), kernel_size=5,
                        window=3)
    with torch.no_grad():
        outs = model.cuda()(img.cuda())
    for o, r in zip(outs, refs):
        torch.testing.assert_close(o.cpu(), r, rtol=1e-9, atol=1e-9)

    # full-size ELSA-Swin-T, mixed precision training step, with and without checkpointing
    model = ELSASwinTransformer(arch='tiny', drop_path_rate=0.2).cuda().train()
    x = torch.randn(2, 3, 512, 640, device='cuda')
    peaks = {}
    for with_cp in (False, True):
        for layer in model.layers:
            layer.with_cp = with_cp
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.autocast('cuda', dtype=torch.float16):
            loss = _loss([o.float() for o in model(x)])
        loss.backward()
        torch.cuda.synchronize()
        peaks[with_cp] = torch.cuda.max_memory_allocated() - base
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad(set_to_none=True)
    assert peaks[True] < 0.5 * peaks[False], peaks


def _two_stage(**kwargs):
    return ELSASwinTransformer(embed_dims=8, depths=(1, 1), num_heads=(1, 2), group_width=4,
                               strides=(4, 2), window_size=4, elsa_stages=(0, ),
                               out_indices=(0, 1), **kwargs)


@pytest.mark.parametrize('lam', [0.5, -1.5, float('nan'), float('inf')])
def test_lam_that_cannot_work_is_refused(lam):
    """ghost_mul is signed (standard normal init): ghost_mul ** 0.5 made every output NaN."""
    with pytest.raises(ValueError, match='lam'):
        _two_stage(lam=lam)


@pytest.mark.parametrize('lam', [1, 2, -1])
def test_whole_lam_gives_finite_outputs(lam):
    outs = _two_stage(lam=lam)(torch.randn(1, 3, 32, 32))
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('size,shifted', [((4, 4), False), ((4, 9), False), ((5, 9), True),
                                          ((9, 6), True)])
def test_pad_small_map_false_shifts_only_maps_larger_than_the_window(size, shifted):
    """The classifiers' rule (official ELSA-Swin classifier, mmpretrain's Swin): a map not
    larger than the window (4) is not shifted; a larger one is, as with pad_small_map=True."""
    torch.manual_seed(0)
    blk = SwinBlock(16, 2, window_size=4, shift=True, pad_small_map=False).double().eval()
    sd = random_state_dict(blk, seed=5)
    blk.load_state_dict(sd)
    x = torch.randn(2, *size, 16, dtype=torch.float64)
    sd = {'b.' + k: v for k, v in sd.items()}
    with torch.no_grad():
        got = blk(x)
        torch.testing.assert_close(got, swin_block_ref(x, sd, 'b', 2, 4, shifted), rtol=1e-10,
                                   atol=1e-10)
        # the two rules differ here (the test can tell them apart)
        assert not torch.allclose(got, swin_block_ref(x, sd, 'b', 2, 4, not shifted))


def test_pad_small_map_false_refuses_a_map_smaller_than_the_window():
    blk = SwinBlock(16, 2, window_size=4, shift=True, pad_small_map=False)
    with pytest.raises(ValueError, match=r'3x5 map is smaller than the window \(4\).*'
                                         r'pad_small_map=True'):
        blk(torch.randn(1, 3, 5, 16))


def test_pad_small_map_false_decides_in_the_exported_graph(tmp_path):
    """Exported once (at a size where it shifts), the graph still does not shift a map equal
    to the window: the decision is a tensor, not a branch fixed at export."""
    from mmelsa.deployment import OnnxRunner
    torch.manual_seed(0)
    blk = SwinBlock(16, 2, window_size=4, shift=True, pad_small_map=False).eval()
    path = str(tmp_path / 'block.onnx')
    torch.onnx.export(blk, (torch.randn(1, 9, 10, 16), ), path, dynamo=False, opset_version=17,
                      input_names=['x'], dynamic_axes={'x': {0: 'b', 1: 'h', 2: 'w'}})
    runner = OnnxRunner(path)
    for size in [(9, 10), (4, 7), (4, 4), (6, 5)]:
        x = torch.randn(1, *size, 16)
        with torch.no_grad():
            expected = blk(x)
        torch.testing.assert_close(torch.from_numpy(runner(x)[0]), expected, rtol=1e-4,
                                   atol=1e-4)


def test_classifier_default_follows_the_arguments_toolbox():
    """pad_small_map defaults to mmpretrain's False with mmpretrain's arguments, to mmdet's /
    mmseg's padding (True) otherwise; the timm classifier is the official one (False)."""
    from mmelsa.models.timm_entry import ELSASwinClassifier
    assert all(not b.pad_small_map for b in
               ELSASwinTransformer(arch='tiny', img_size=224).layers[3].blocks)
    assert all(b.pad_small_map for b in ELSASwinTransformer(arch='tiny').layers[3].blocks)
    assert all(not b.pad_small_map for b in ELSASwinClassifier('tiny').layers[3].blocks)
