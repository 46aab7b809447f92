"""The scaled-ReLU convolutional stem: shapes, strides and parameter counts; the ablation
variants without BatchNorm / ReLU; the forward against the same layers written out with
torch.nn.functional in float64; registration and one-line errors."""
import pytest
import torch
import torch.nn.functional as F

from mmelsa.models import ConvStem


def expected_params(embed, stem=(64, 64, 64), kernels=(7, 3, 3), proj=8, norm=True, cin=3):
    n, width = 0, cin
    for c, k in zip(stem, kernels):
        n += width * c * k * k + (2 * c if norm else c)  # weights + (BN affine | conv bias)
        width = c
    return n + width * embed * proj * proj + embed


@pytest.mark.parametrize('size,grid', [((224, 224), (14, 14)), ((225, 230), (15, 15)),
                                       ((17, 40), (2, 3))])
def test_default_stem_is_the_papers(size, grid):
    stem = ConvStem(embed_dims=192, patch_size=16)
    tokens, out = stem(torch.randn(2, 3, *size))
    assert out == grid and tokens.shape == (2, grid[0] * grid[1], 192)
    convs = [m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size[0], c.stride[0], c.bias is None) for c in convs] == [
        (7, 2, True), (3, 1, True), (3, 1, True), (8, 8, False)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in stem.modules()) == 3
    assert sum(isinstance(m, torch.nn.ReLU) for m in stem.modules()) == 3
    assert sum(p.numel() for p in stem.parameters()) == expected_params(192)


@pytest.mark.parametrize('norm_cfg,act_cfg', [(None, dict(type='ReLU')),
                                              (dict(type='BN'), None), (None, None)])
def test_ablation_variants(norm_cfg, act_cfg):
    stem = ConvStem(embed_dims=96, patch_size=16, norm_cfg=norm_cfg, act_cfg=act_cfg)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in stem.modules()) == (
        norm_cfg is not None)
    assert any(isinstance(m, torch.nn.ReLU) for m in stem.modules()) == (act_cfg is not None)
    assert sum(p.numel() for p in stem.parameters()) == expected_params(
        96, norm=norm_cfg is not None)
    tokens, grid = stem(torch.randn(1, 3, 32, 48))
    assert grid == (2, 3) and tokens.shape == (1, 6, 96)


@pytest.mark.parametrize('train', [False, True])
def test_forward_is_the_layers_written_out(train):
    torch.manual_seed(0)
    stem = ConvStem(embed_dims=24, patch_size=4, stem_channels=(8, 8), kernel_sizes=(3, 3),
                    strides=(2, 1)).double().train(train)
    with torch.no_grad():
        for m in stem.modules():  # statistics that are not the identity
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 13, 10, dtype=torch.float64)
    sd = {k: v.clone() for k, v in stem.state_dict().items()}
    want = F.pad(x, (0, 2, 0, 3))  # to multiples of 4
    for conv, bn, stride, pad in (('stem.0', 'stem.1', 2, 1), ('stem.3', 'stem.4', 1, 1)):
        want = F.conv2d(want, sd[conv + '.weight'], stride=stride, padding=pad)
        want = F.batch_norm(want, sd[bn + '.running_mean'].clone(),
                            sd[bn + '.running_var'].clone(), sd[bn + '.weight'], sd[bn + '.bias'],
                            training=train, eps=1e-5)
        want = F.relu(want)
    want = F.conv2d(want, sd['proj.weight'], sd['proj.bias'], stride=2)
    tokens, grid = stem(x)
    assert grid == (4, 3)
    torch.testing.assert_close(tokens, want.flatten(2).transpose(1, 2), rtol=1e-12, atol=1e-12)


def test_registered_and_built_by_type():
    import mmelsa  # noqa: F401
    from mmengine.registry import MODELS
    stem = MODELS.build(dict(type='ConvStem', embed_dims=96, patch_size=4, strides=(2, 1, 1)))
    tokens, grid = stem(torch.randn(1, 3, 56, 56))
    assert grid == (14, 14) and tokens.shape == (1, 196, 96)


@pytest.mark.parametrize('kwargs,error,message', [
    (dict(patch_size=6, strides=(4, 1, 1)), ValueError, 'must divide patch_size 6'),
    (dict(kernel_sizes=(7, 4, 3)), ValueError, 'kernel_sizes must be odd'),
    (dict(strides=(2, 1)), ValueError, 'one entry per convolution'),
    (dict(norm_cfg=dict(type='LN')), ValueError, "norm_cfg type must be one of"),
    (dict(embed_dim=96), TypeError, "ConvStem has no argument 'embed_dim'; did you mean "
     "'embed_dims'?"),
])
def test_bad_arguments_are_one_line(kwargs, error, message):
    with pytest.raises(error) as err:
        ConvStem(**kwargs)
    assert message in str(err.value) and '\n' not in str(err.value)


def small_elsa_swin(**kwargs):
    from mmelsa.models import ELSASwinTransformer
    torch.manual_seed(0)
    return ELSASwinTransformer(embed_dims=16, depths=(1, 1, 1, 2), num_heads=(1, 2, 2, 4),
                               window_size=7, elsa_kernel_size=5, group_width=4,
                               drop_path_rate=0., **kwargs)


def test_elsa_swin_with_the_conv_stem():
    """conv_stem puts the stem in the patchify convolution's place: same output shapes at odd
    sizes, the other parameters' names unchanged, gradients reach the stem, norm_eval keeps its
    BatchNorms in eval mode."""
    plain, conv = small_elsa_swin(), small_elsa_swin(conv_stem={})
    for size in ((45, 61), (37, 29)):
        x = torch.randn(2, 3, *size)
        assert [o.shape for o in conv(x)] == [o.shape for o in plain(x)]
    keys = set(conv.state_dict())
    assert keys - {k for k in keys if k.startswith('patch_embed.proj.')} == set(
        plain.state_dict()) - {'patch_embed.proj.weight', 'patch_embed.proj.bias'}
    assert isinstance(conv.patch_embed.proj, ConvStem)
    sum(o.mean() for o in conv(torch.randn(2, 3, 32, 32))).backward()
    assert all(p.grad is not None for p in conv.patch_embed.proj.parameters())
    frozen = small_elsa_swin(conv_stem={}, norm_eval=True).train()
    bns = [m for m in frozen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 3 and not any(m.training for m in bns)


def test_elsa_swin_with_the_conv_stem_exports(tmp_path):
    from mmelsa.deployment import OnnxRunner
    from tests.deployment.test_plain_export import assert_runner_agrees
    model = small_elsa_swin(conv_stem={}).eval()
    path = str(tmp_path / 'conv_stem.onnx')
    torch.onnx.export(model, (torch.randn(1, 3, 64, 96), ), path, dynamo=False, opset_version=17,
                      input_names=['x'], dynamic_axes={'x': {0: 'b', 2: 'h', 3: 'w'}})
    assert_runner_agrees(OnnxRunner(path), model, [(1, 3, 64, 96), (2, 3, 37, 53)])


def test_volos_stem_is_the_same_module():
    """timm's VOLO patch embedding (ELSA-VOLO's stem) and ConvStem with VOLO's arguments compute
    the same function from the same weights (VOLO's ``conv.i`` is ConvStem's ``stem.i``)."""
    from timm.models.volo import PatchEmbed as VoloPatchEmbed
    torch.manual_seed(0)
    volo = VoloPatchEmbed(stem_conv=True, stem_stride=2, patch_size=8, hidden_dim=64,
                          embed_dim=96).double().eval()
    with torch.no_grad():
        for m in volo.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
    stem = ConvStem(3, 96, patch_size=8).double().eval()
    stem.load_state_dict({k.replace('conv.', 'stem.', 1): v for k, v in
                          volo.state_dict().items()}, strict=True)
    x = torch.randn(2, 3, 64, 48, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(stem.forward_map(x), volo(x), rtol=1e-12, atol=1e-12)
