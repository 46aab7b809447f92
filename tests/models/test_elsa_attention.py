"""The ELSA module against the independent float64 reference, in every ghost-head mode."""
import pytest
import torch

from mmelsa.models import ELSAAttention
from mmelsa.models.elsa_attention import ghost_head_shape
from tests.models.elsa_swin_reference import elsa_ref, random_state_dict

# (lam, gamma, expected ghost_head shape for C=24, K) -- the modes of docs/elsa_facts.md
MODES = [
    (0., 1., (1, 24)),  # ELSA-Swin: additive ghost only
    (0., 0.7, (1, 24)),
    (2., 0.5, (2, 1, 24)),  # both: [0] mul, [1] add
    (1., 0., (1, 24)),  # multiplicative only
    (0., 0., None),  # no ghost head
]


@pytest.mark.parametrize('kernel_size', [5, 7])
@pytest.mark.parametrize('lam,gamma,shape', MODES)
def test_elsa_module_matches_reference(kernel_size, lam, gamma, shape):
    torch.manual_seed(0)
    m = ELSAAttention(24, num_heads=3, kernel_size=kernel_size, group_width=4, lam=lam,
                      gamma=gamma).double().eval()
    if shape is None:
        assert m.ghost_head is None and 'ghost_head' not in m.state_dict()
    else:
        assert tuple(m.ghost_head.shape) == shape + (kernel_size, kernel_size)
    sd = random_state_dict(m, seed=kernel_size)
    m.load_state_dict(sd, strict=True)
    x = torch.randn(2, 9, 13, 24, dtype=torch.float64)
    out = m(x)
    ref = elsa_ref(x, {'attn.' + k: v for k, v in sd.items()}, 'attn', 3, kernel_size, lam,
                   gamma)
    assert out.shape == (2, 9, 13, 24)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_elsa_module_backward_reaches_every_parameter():
    torch.manual_seed(0)
    m = ELSAAttention(16, num_heads=2, kernel_size=5, group_width=4, lam=1., gamma=1.).double()
    x = torch.randn(1, 7, 6, 16, dtype=torch.float64, requires_grad=True)
    m(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dim_qk_rounding_and_shapes():
    # dim_qk = (C // 3) * 2 rounded up to the group width (base stage 0: 128 -> 84 -> 88)
    m = ELSAAttention(128, num_heads=4, group_width=8)
    assert m.dim_qk == 88
    assert m.pre_proj.weight.shape == (2 * 88 + 128, 128, 1, 1)
    assert m.attn[0].weight.shape == (88, 8, 7, 7)
    assert m.attn[2].weight.shape == (49 * 4, 88, 1, 1)
    assert ghost_head_shape(96, 7, 0, 1) == (1, 96, 7, 7)


def test_ghost_init_statistics():
    torch.manual_seed(0)
    m = ELSAAttention(384, num_heads=12, kernel_size=7, lam=1., gamma=1.)
    mul, add = m.ghost_head[0], m.ghost_head[1]
    assert abs(mul.std().item() - 1.0) < 0.05  # standard normal
    assert abs(add.std().item() - 0.02) < 0.002  # truncated normal, std .02
    m2 = ELSAAttention(384, num_heads=12, kernel_size=7)  # lam 0: additive only
    assert abs(m2.ghost_head.std().item() - 0.02) < 0.002


def test_dilation_matches_reference():
    torch.manual_seed(1)
    m = ELSAAttention(12, num_heads=2, kernel_size=3, dilation=2, group_width=4).double().eval()
    sd = random_state_dict(m, seed=3)
    m.load_state_dict(sd)
    x = torch.randn(1, 8, 11, 12, dtype=torch.float64)
    ref = elsa_ref(x, {'a.' + k: v for k, v in sd.items()}, 'a', 2, 3, dilation=2)
    torch.testing.assert_close(m(x), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('kwargs,match', [
    (dict(kernel_size=4), 'kernel_size'),
    (dict(dilation=0), 'dilation'),
    (dict(num_heads=5), 'num_heads'),
    (dict(group_width=0), 'group_width'),
    (dict(dilation=2 ** 20), 'dilation must be <= 65536'),
    (dict(dim=2, num_heads=1), 'dim must be >= 3'),
])
def test_bad_arguments(kwargs, match):
    args = dict(dim=24, num_heads=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ELSAAttention(**args)


@pytest.mark.parametrize('kwargs', [dict(dilation=2.0), dict(dilation=True),
                                    dict(kernel_size=3.0)])
def test_non_int_hyperparameters_are_refused_when_built(kwargs):
    """Failed before: built, then the first forward failed inside conv2d / empty()."""
    with pytest.raises(TypeError, match=f'{next(iter(kwargs))} must be an int'):
        ELSAAttention(24, num_heads=3, **kwargs)


def test_smallest_width_builds_and_runs():
    m = ELSAAttention(3, num_heads=1, kernel_size=3, group_width=1).eval()
    assert m(torch.randn(1, 5, 6, 3)).shape == (1, 5, 6, 3)  # (B, H, W, C)


def exporting():
    """The modules' export spellings, run eagerly (float64) as the exporters trace them."""
    from contextlib import ExitStack
    from unittest import mock

    from mmelsa.models import elsa_attention, grouped_conv
    stack = ExitStack()
    for module in (elsa_attention, grouped_conv):
        stack.enter_context(mock.patch.object(module, 'is_exporting', lambda: True))
    return stack


@pytest.mark.parametrize('kernel_size,dilation,shape', [(7, 1, (2, 9, 13)), (5, 2, (1, 17, 40)),
                                                         (3, 1, (1, 1, 5))])
@pytest.mark.parametrize('lam,gamma,_', MODES)
def test_exported_spelling_matches_reference(kernel_size, dilation, shape, lam, gamma, _):
    """Exported, the module is spelt channels last (1x1 convolutions as MatMuls, the band form
    of the operator) wherever there is no multiplicative ghost; it is the same function."""
    torch.manual_seed(0)
    m = ELSAAttention(24, num_heads=3, kernel_size=kernel_size, dilation=dilation,
                      group_width=4, lam=lam, gamma=gamma).double().eval()
    sd = random_state_dict(m, seed=kernel_size)
    m.load_state_dict(sd, strict=True)
    x = torch.randn(*shape, 24, dtype=torch.float64)
    calls = []
    spelt = m._forward_channels_last
    m._forward_channels_last = lambda x: calls.append(1) or spelt(x)
    with exporting():
        out = m(x)
    assert len(calls) == (lam == 0)
    ref = elsa_ref(x, {'attn.' + k: v for k, v in sd.items()}, 'attn', 3, kernel_size, lam,
                   gamma, dilation=dilation)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_exported_spelling_drops_the_softmaxed_attention():
    """With a live attention dropout (training), the export spelling drops the probabilities,
    not the logits: at p = 1 only the additive ghost's term is left."""
    torch.manual_seed(0)
    m = ELSAAttention(24, num_heads=3, group_width=4, attn_drop=1.0).double().train()
    x = torch.randn(1, 9, 13, 24, dtype=torch.float64)
    with exporting():
        out = m(x)
    m.eval()
    ghost_only = m.post_proj(torch.nn.functional.conv2d(
        m.pre_proj(x.permute(0, 3, 1, 2))[:, -24:], m.ghost_head[0].unsqueeze(1) * m.gamma,
        padding=3, groups=24).permute(0, 2, 3, 1))
    torch.testing.assert_close(out, ghost_only, rtol=1e-10, atol=1e-10)
