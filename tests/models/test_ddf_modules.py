"""DDF's modules (FilterNorm, DDFPack) and DDF-ResNet against computations written here from
the definitions (docs/ddf_facts.md), in float64."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmelsa.models.ddf import DDFPack, FilterNorm

from ..ops.test_ddf import ddf_reference

#: the release's parameter names of one DDFPack (docs/ddf_facts.md, section 3)
RELEASE_KEYS = ['channel_branch.1.bias', 'channel_branch.1.weight', 'channel_branch.3.bias',
                'channel_branch.3.weight', 'channel_branch.4.std', 'spatial_branch.0.bias',
                'spatial_branch.0.weight']


def standardise(t, dim):
    """(t - mean) / (unbiased std + 1e-10) over ``dim``."""
    t = t - t.mean(dim, keepdim=True)
    return t / (t.std(dim, keepdim=True) + 1e-10)


def test_spatial_filter_norm_standardises_each_pixels_taps():
    torch.manual_seed(0)
    x = torch.randn(2, 3 * 9, 5, 4, dtype=torch.float64)
    out = FilterNorm(3, 3, 'spatial', 'relu')(x)
    taps = out.reshape(2, 3, 9, 5, 4)
    gain = math.sqrt(2) / 3
    assert torch.allclose(taps.mean(2), torch.zeros(2, 3, 5, 4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(taps.std(2), torch.full((2, 3, 5, 4), gain, dtype=torch.float64))
    assert list(FilterNorm(3, 3, 'spatial').state_dict()) == []  # nothing learnt


def test_channel_filter_norm_scales_by_its_learnt_std():
    torch.manual_seed(0)
    norm = FilterNorm(4, 3, 'channel', 'relu', running_std=True).double()
    assert norm.std.shape == (36, )
    x = torch.randn(2, 36, 1, 1, dtype=torch.float64)
    want = standardise(x.reshape(2, 4, 9), 2).reshape(2, 36, 1, 1) * norm.std.reshape(1, 36, 1, 1)
    assert torch.allclose(norm(x), want, atol=1e-12)


def test_channel_std_starts_at_the_gain_scale():
    torch.manual_seed(0)
    std = FilterNorm(256, 3, 'channel', 'relu', running_std=True).std
    assert abs(std.std().item() / (math.sqrt(2) / 3) - 1) < 0.05


@pytest.mark.parametrize('combine', ['mul', 'add'])
@pytest.mark.parametrize('stride,head,size', [(1, 1, (8, 8)), (2, 1, (9, 7)), (2, 2, (6, 5))])
def test_ddf_pack_is_the_two_branches_and_the_operator(combine, stride, head, size):
    torch.manual_seed(1)
    C, K = 10, 3
    pack = DDFPack(C, K, stride=stride, head=head, kernel_combine=combine).double()
    assert sorted(pack.state_dict()) == RELEASE_KEYS
    x = torch.randn(2, C, *size, dtype=torch.float64)
    sd = pack.state_dict()
    # spatial: 1x1 conv with stride, standardised per head and pixel, times gain / K
    sf = F.conv2d(x, sd['spatial_branch.0.weight'], sd['spatial_branch.0.bias'], stride=stride)
    sf = standardise(sf.reshape(2, head, K * K, *sf.shape[2:]), 2).reshape(sf.shape)
    sf = sf * math.sqrt(2) / K
    # channel: pool, squeeze, ReLU, expand, standardised per channel, times std
    pooled = x.mean((2, 3), keepdim=True)
    mid = F.relu(F.conv2d(pooled, sd['channel_branch.1.weight'], sd['channel_branch.1.bias']))
    cf = F.conv2d(mid, sd['channel_branch.3.weight'], sd['channel_branch.3.bias'])
    cf = standardise(cf.reshape(2, C, K * K), 2) * sd['channel_branch.4.std'].reshape(C, K * K)
    want = ddf_reference(x, cf.reshape(2, C, K, K), sf, K, 1, stride, combine)
    out = pack(x)
    assert out.shape == (2, C, (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1)
    assert torch.allclose(out, want, atol=1e-10)


@pytest.mark.parametrize('kwargs,message', [
    (dict(kernel_combine='sum'), "kernel_combine must be 'mul' or 'add', got 'sum'"),
    (dict(head=3), 'head (3) must divide in_channels (8)'),
    (dict(kernel_size=1), 'kernel_size must be >= 3, got 1'),
    (dict(se_ratio=0.1), 'se_ratio * in_channels must be >= 1'),
])
def test_ddf_pack_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        DDFPack(8, **kwargs)
    assert message in str(err.value)
