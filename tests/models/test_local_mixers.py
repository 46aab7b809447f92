"""ELSASwinTransformer(local_mixer=...): the baselines of the ELSA paper's comparison (Swin's
window attention, a depth-wise convolution, DDF) in the stages ELSA occupies. Shapes, gradients,
parameter names, the depth-wise block against an independent float64 computation of its stated
form, and the error for an unknown name."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from mmelsa.models import ELSASwinTransformer
from mmelsa.models.local_mixers import LOCAL_MIXERS, ConvMixerBlock
from mmelsa.models.swin_layers import SwinBlock

OFFICIAL_KEYS = os.path.join(os.path.dirname(__file__), 'data', 'elsa_swin_official_keys.json')
# Narrow enough to run in well under a second; 16 channels keep DDF's squeeze width >= 1.
TINY = dict(embed_dims=16, depths=(2, 1, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.)


def tiny(mixer, **kwargs):
    return ELSASwinTransformer(**{**TINY, **kwargs}, local_mixer=mixer)


def _loss(outs):
    # a weighted sum: every output element gets a distinct gradient
    return sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum()
               for o in outs)


@pytest.mark.parametrize('mixer', LOCAL_MIXERS)
@pytest.mark.parametrize('size', [(45, 61), (37, 29), (9, 7), (1, 1)])
def test_outputs_have_the_elsa_backbones_shapes(mixer, size):
    torch.manual_seed(0)
    img = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = [o.shape for o in tiny('elsa').eval()(img)]
        outs = tiny(mixer).eval()(img)
    assert [o.shape for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('mixer', LOCAL_MIXERS)
def test_backward_reaches_every_parameter(mixer):
    torch.manual_seed(0)
    model = tiny(mixer, drop_path_rate=0.2, drop_rate=0.1, attn_drop_rate=0.1).train()
    img = torch.randn(2, 3, 43, 50, requires_grad=True)
    _loss(model(img)).backward()
    assert torch.isfinite(img.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_the_block_type_of_each_stage():
    kinds = {'elsa': 'ELSABlock', 'window': 'SwinBlock', 'dwconv': 'ConvMixerBlock',
             'ddf': 'ConvMixerBlock'}
    for mixer in LOCAL_MIXERS:
        model = tiny(mixer)
        for i, layer in enumerate(model.layers):
            want = kinds[mixer] if i < 3 else 'SwinBlock'
            assert {type(b).__name__ for b in layer.blocks} == {want}, (mixer, i)
    ddf = tiny('ddf').layers[2].blocks[0].mixer.spatial
    assert (ddf.kernel_size, ddf.head, ddf.kernel_combine) == (7, 2, 'mul')
    conv = tiny('dwconv', elsa_kernel_size=5).layers[1].blocks[0].mixer.spatial
    assert conv.kernel_size == (5, 5) and conv.groups == conv.in_channels == 32


def test_elsa_keeps_exactly_the_official_keys():
    with open(OFFICIAL_KEYS) as f:
        official = json.load(f)['tiny']
    model = ELSASwinTransformer(arch='tiny', local_mixer='elsa')
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(keys) == list(official['keys'])  # same names, same order, same shapes
    assert keys == official['keys']
    default = ELSASwinTransformer(**TINY)
    assert list(default.state_dict()) == list(tiny('elsa').state_dict())


def test_window_has_swins_window_attention_names_in_stages_0_to_2():
    model = tiny('window', window_size=5)
    sd = model.state_dict()
    swin_block = {k.split('.', 4)[-1] for k in sd if k.startswith('layers.3.blocks.0.')}
    assert {'attn.rb', 'attn.relative_id', 'attn.pre_proj.weight',
            'attn.post_proj.weight'} <= swin_block
    for i in range(3):
        heads = TINY['num_heads'][i]
        for j, blk in enumerate(model.layers[i].blocks):
            assert isinstance(blk, SwinBlock)
            assert blk.shift_size == (2 if j % 2 else 0)  # Swin's alternation
            prefix = f'layers.{i}.blocks.{j}.'
            assert {k[len(prefix):] for k in sd if k.startswith(prefix)} == swin_block
            assert sd[prefix + 'attn.rb'].shape == (heads, 9 ** 2)
    assert not any('ghost_head' in k or 'mixer' in k for k in sd)
    # the same network as ELSA-Swin with no ELSA stage, i.e. a Swin Transformer
    swin = ELSASwinTransformer(**TINY, window_size=5, elsa_stages=())
    assert list(swin.state_dict()) == list(sd)
    swin.load_state_dict(sd)
    img = torch.randn(1, 3, 41, 35)
    with torch.no_grad():
        for a, b in zip(model.eval()(img), swin.eval()(img)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# --------------------------------------------------------------------------- dwconv block
def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean)**2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def _depthwise(x, weight):
    """Zero-padded K x K depth-wise correlation of x (B, H, W, C) by weight (C, 1, K, K),
    tap by tap."""
    B, H, W, C = x.shape
    K = weight.shape[-1]
    r = K // 2
    padded = torch.zeros(B, H + 2 * r, W + 2 * r, C, dtype=x.dtype)
    padded[:, r:r + H, r:r + W] = x
    out = torch.zeros_like(x)
    for u in range(K):
        for v in range(K):
            out += padded[:, u:u + H, v:v + W] * weight[:, 0, u, v]
    return out


def _batch_norm(x, bn, training):
    """BatchNorm over (B, H, W) of channels-last x: batch statistics (biased variance) when
    training, the running ones otherwise."""
    if training:
        mean = x.mean((0, 1, 2))
        var = ((x - mean)**2).mean((0, 1, 2))
    else:
        mean, var = bn['running_mean'], bn['running_var']
    return (x - mean) / torch.sqrt(var + 1e-5) * bn['weight'] + bn['bias']


def dwconv_block_ref(x, p, training):
    """The stated form, from the parameters alone: x + mixer(LN(x)), mixer = Linear, K x K
    depth-wise convolution, BatchNorm, ReLU, Linear; then x + MLP(LN(x)) with exact GELU."""
    y = _layer_norm(x, p['norm1.weight'], p['norm1.bias'], 1e-5)
    y = y @ p['mixer.pre_proj.weight'].t() + p['mixer.pre_proj.bias']
    y = _depthwise(y, p['mixer.spatial.weight'])
    bn = {k: p[f'mixer.bn.{k}'] for k in ('weight', 'bias', 'running_mean', 'running_var')}
    y = _batch_norm(y, bn, training).clamp(min=0)
    x = x + y @ p['mixer.post_proj.weight'].t() + p['mixer.post_proj.bias']
    y = _layer_norm(x, p['norm2.weight'], p['norm2.bias'], 1e-5)
    y = y @ p['mlp.fc1.weight'].t() + p['mlp.fc1.bias']
    y = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))
    return x + y @ p['mlp.fc2.weight'].t() + p['mlp.fc2.bias']


@pytest.mark.parametrize('training', [False, True])
def test_dwconv_block_equals_its_stated_form_in_float64(training):
    model = tiny('dwconv', elsa_kernel_size=5).double()
    block = model.layers[1].blocks[0]
    assert isinstance(block, ConvMixerBlock)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in block.state_dict().items():
            if name.endswith('num_batches_tracked'):
                continue
            if name.endswith('running_var'):
                t.copy_(0.5 + torch.rand(t.shape, generator=g, dtype=t.dtype))
            else:
                t.copy_(0.3 * torch.randn(t.shape, generator=g, dtype=t.dtype))
    params = {k: v.clone() for k, v in block.state_dict().items()}
    x = torch.randn(2, 9, 11, 32, generator=g, dtype=torch.float64)
    block.train(training)
    with torch.no_grad():
        out = block(x)
    torch.testing.assert_close(out, dwconv_block_ref(x, params, training), rtol=1e-10,
                               atol=1e-10)


def test_ddf_mixer_is_pre_proj_ddf_bn_relu_post_proj():
    """The DDF mixer's aggregation written out (docs/ddf_facts.md): out[c] = sum over taps of
    x * channel_filter[c] * spatial_filter[head of c], the filters from DDFPack's branches."""
    torch.manual_seed(0)
    mixer = tiny('ddf', elsa_kernel_size=3).double().layers[1].blocks[0].mixer.eval()
    with torch.no_grad():
        mixer.bn.running_mean.uniform_(-.5, .5)
        mixer.bn.running_var.uniform_(.5, 1.5)
    x = torch.randn(2, 6, 7, 32, dtype=torch.float64)
    with torch.no_grad():
        y = mixer.pre_proj(x).permute(0, 3, 1, 2)
        ddf = mixer.spatial
        B, C, H, W = y.shape
        K, G = 3, ddf.head
        channel = ddf.channel_branch(y).reshape(B, C, K * K)
        spatial = ddf.spatial_branch(y).reshape(B, G, K * K, H, W)
        taps = F.unfold(y, K, padding=K // 2).reshape(B, C, K * K, H, W)
        head = torch.arange(C) // (C // G)
        agg = (taps * channel[..., None, None] * spatial[:, head]).sum(2)
        agg = mixer.bn(agg).clamp(min=0)
        ref = mixer.post_proj(agg.permute(0, 2, 3, 1))
        torch.testing.assert_close(mixer(x), ref, rtol=1e-10, atol=1e-10)


def test_norm_eval_keeps_the_mixers_batchnorms_in_eval_mode():
    model = tiny('dwconv', norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 5 and not any(m.training for m in bns)
    assert model.layers[0].blocks[0].mlp.training
    assert all(m.training for m in tiny('dwconv').train().modules())


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize('name,suggestion', [('lsa', 'window'), ('dw_conv', 'dwconv'),
                                             ('DDF', 'ddf'), ('elssa', 'elsa')])
def test_an_unknown_mixer_is_one_line_with_a_suggestion(name, suggestion):
    with pytest.raises(ValueError) as info:
        ELSASwinTransformer(**TINY, local_mixer=name)
    msg = str(info.value)
    assert '\n' not in msg and msg.startswith('local_mixer must be one of')
    assert msg.endswith(f'got {name!r}; did you mean {suggestion!r}?')
