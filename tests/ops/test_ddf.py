"""DDF on the ELSA operator: ``mmelsa.ops.ddf`` and per-sample ghosts of ``elsa_attention``,
against a float64 reference written from DDF's definition (docs/ddf_facts.md, section 1) with
explicit taps, independent of the operator's kernels and of its unfold reference."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmelsa.ops import channels_last_path, ddf, elsa_attention
from mmelsa.ops.onnx import elsa_export_form

from ._helpers import max_rel_err


def ddf_reference(x, cf, sf, K, d, s, combine):
    """out[b,c,i,j] = sum_{u,v} x[b,c,i*s+(u-K//2)*d, j*s+(v-K//2)*d] * F(cf[b,c,u,v],
    sf[b, g*K*K+u*K+v, i, j]), F = * or +, g the head of channel c; in float64."""
    x, cf, sf = (t.detach().to(torch.float64) for t in (x, cf, sf))
    B, C, H, W = x.shape
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    G = sf.shape[1] // (K * K)
    p = (K // 2) * d
    xp = F.pad(x, (p, p, p, p))
    out = torch.zeros(B, C, Ho, Wo, dtype=torch.float64)
    head = torch.arange(C) // (C // G)
    for u in range(K):
        for v in range(K):
            tap = xp[:, :, u * d:u * d + (Ho - 1) * s + 1:s, v * d:v * d + (Wo - 1) * s + 1:s]
            spatial = sf[:, head * K * K + u * K + v]  # (B, C, Ho, Wo)
            channel = cf[:, :, u, v, None, None]
            filt = channel * spatial if combine == 'mul' else channel + spatial
            out += tap * filt
    return out


def make(B, C, G, H, W, K, s, dtype=torch.float64, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    ts = (torch.randn(B, C, H, W, generator=gen, dtype=torch.float64),
          torch.randn(B, C, K, K, generator=gen, dtype=torch.float64),
          torch.randn(B, G * K * K, Ho, Wo, generator=gen, dtype=torch.float64))
    return tuple(t.to(dtype).requires_grad_(requires_grad) for t in ts)


# (B, C, G, H, W, K, dilation, stride): DDF-ResNet's K = 3 with stride 1 and 2 at odd and even
# sizes (the release breaks at odd sizes with stride 2), heads, dilation, larger kernels.
CASES = [
    (2, 8, 1, 9, 7, 3, 1, 2),
    (2, 8, 1, 8, 8, 3, 1, 2),
    (3, 6, 2, 7, 9, 3, 1, 1),
    (1, 12, 4, 11, 10, 5, 2, 1),
    (2, 4, 1, 5, 6, 7, 1, 2),
    (1, 6, 3, 3, 2, 9, 3, 1),  # the map is smaller than the kernel
]


@pytest.mark.parametrize('combine', ['mul', 'add'])
@pytest.mark.parametrize('case', CASES)
def test_forward_matches_the_definition(case, combine):
    B, C, G, H, W, K, d, s = case
    x, cf, sf = make(B, C, G, H, W, K, s)
    out = ddf(x, cf, sf, K, d, s, combine)
    assert out.shape == (B, C, (H - 1) // s + 1, (W - 1) // s + 1)
    assert max_rel_err(out, ddf_reference(x, cf, sf, K, d, s, combine)) < 1e-12


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 3), heads=st.integers(1, 3), per_head=st.integers(1, 3),
       H=st.integers(1, 12), W=st.integers(1, 12), K=st.sampled_from([1, 3, 5]),
       d=st.integers(1, 3), s=st.integers(1, 3), combine=st.sampled_from(['mul', 'add']),
       channels_last=st.booleans(), seed=st.integers(0, 2**16))
def test_generated_shapes_match_the_definition(B, heads, per_head, H, W, K, d, s, combine,
                                               channels_last, seed):
    x, cf, sf = make(B, heads * per_head, heads, H, W, K, s, seed=seed)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = ddf(x, cf, sf, K, d, s, combine)
    assert max_rel_err(out, ddf_reference(x, cf, sf, K, d, s, combine)) < 1e-12


@pytest.mark.parametrize('combine', ['mul', 'add'])
@pytest.mark.parametrize('case', [CASES[0], CASES[2], CASES[3]])
def test_gradients_of_all_three_inputs(case, combine):
    B, C, G, H, W, K, d, s = case
    inputs = make(B, C, G, H, W, K, s, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: ddf(*t, K, d, s, combine), inputs)


@pytest.mark.parametrize('combine', ['mul', 'add'])
def test_second_order(combine):
    inputs = make(2, 4, 2, 6, 5, 3, 2, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda *t: ddf(*t, 3, 1, 2, combine), inputs)


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize('combine', ['mul', 'add'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_low_precision_forward_and_gradients(dtype, tol, combine, channels_last):
    x, cf, sf = make(2, 16, 2, 13, 11, 3, 2, dtype=dtype, seed=3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert channels_last_path(x, 3, 1, 2) == channels_last
    x, cf, sf = (t.requires_grad_() for t in (x, cf, sf))
    out = ddf(x, cf, sf, 3, 1, 2, combine)
    assert out.dtype == dtype
    x64, cf64, sf64 = (t.detach().double().requires_grad_() for t in (x, cf, sf))
    ref = ddf(x64, cf64, sf64, 3, 1, 2, combine)
    assert max_rel_err(out, ddf_reference(x, cf, sf, 3, 1, 2, combine)) < tol
    grad = torch.randn(ref.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, (x, cf, sf), grad.to(dtype))
    want = torch.autograd.grad(ref, (x64, cf64, sf64), grad)
    for g, w in zip(got, want):
        assert g.shape == w.shape and max_rel_err(g, w) < 4 * tol


def test_mixed_ghosts_on_elsa_attention():
    """A shared multiplicative ghost with a per-sample additive one (and the reverse): each
    ghost's own shape decides, in the kernels as in the export form."""
    gen = torch.Generator().manual_seed(1)
    B, C, G, K = 2, 6, 3, 3
    x = torch.randn(B, C, 7, 8, generator=gen, dtype=torch.float64)
    attn = torch.randn(B, G, K * K, 7, 8, generator=gen, dtype=torch.float64)
    shared = torch.randn(C, K, K, generator=gen, dtype=torch.float64)
    per_sample = torch.randn(B, C, K, K, generator=gen, dtype=torch.float64)
    for gm, ga in ((shared, per_sample), (per_sample, shared)):
        out = elsa_attention(x, attn, gm, ga, K)
        # per sample: the shared ghost broadcast, each sample's own ghost taken alone
        want = torch.cat([
            elsa_attention(x[b:b + 1], attn[b:b + 1], gm if gm.dim() == 3 else gm[b],
                           ga if ga.dim() == 3 else ga[b], K) for b in range(B)])
        assert max_rel_err(out, want) < 1e-12
        assert max_rel_err(elsa_export_form(x, attn, gm, ga, K), want) < 1e-12
        inputs = tuple(t.clone().requires_grad_() for t in (x, attn, gm, ga))
        assert torch.autograd.gradcheck(lambda *t: elsa_attention(*t, K), inputs)


@pytest.mark.parametrize('combine', ['mul', 'add'])
def test_export_form_matches(combine):
    x, cf, sf = make(2, 8, 2, 9, 7, 3, 2, seed=5)
    attn = sf.reshape(2, 2, 9, 5, 4)
    gm, ga = (cf, None) if combine == 'mul' else (None, cf)
    assert max_rel_err(elsa_export_form(x, attn, gm, ga, 3, 1, 2),
                       ddf_reference(x, cf, sf, 3, 1, 2, combine)) < 1e-12


def test_compiles_without_graph_breaks():
    x, cf, sf = make(2, 8, 2, 9, 7, 3, 2, dtype=torch.float32, seed=6)
    fn = torch.compile(lambda *t: ddf(*t, 3, 1, 2, 'mul'), fullgraph=True, backend='aot_eager')
    assert max_rel_err(fn(x, cf, sf), ddf(x, cf, sf, 3, 1, 2, 'mul')) < 1e-6


@pytest.mark.parametrize('change,message', [
    (dict(combine='sum'), "ddf: combine must be 'mul' or 'add', got 'sum'"),
    (dict(cf=(2, 8, 3)), 'ddf: channel_filter must be a 4-D tensor'),
    (dict(cf=(1, 8, 3, 3)), 'ddf: channel_filter must have shape (B, C, K, K) = (2, 8, 3, 3)'),
    (dict(sf=(2, 10, 5, 4)), 'ddf: spatial_filter must have shape (B, G*K*K, Ho, Wo)'),
    (dict(sf=(2, 9, 9, 7)), 'ddf: spatial_filter must have shape (B, G*K*K, Ho, Wo) = '
     '(2, G*9, 5, 4)'),
    (dict(sf=(2, 27, 5, 4)), 'with G heads dividing the 8 channels'),
])
def test_bad_arguments_name_themselves(change, message):
    x, cf, sf = make(2, 8, 1, 9, 7, 3, 2)
    cf = torch.randn(change['cf']) if 'cf' in change else cf
    sf = torch.randn(change['sf'], dtype=torch.float64) if 'sf' in change else sf
    with pytest.raises(ValueError) as err:
        ddf(x, cf.double(), sf, 3, 1, 2, change.get('combine', 'mul'))
    assert message in str(err.value)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-5),
                                       (torch.float16, 4e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize('combine', ['mul', 'add'])
@pytest.mark.parametrize('case', [CASES[0], CASES[2], CASES[4]])
def test_cuda_forward_and_gradients(case, combine, dtype, tol):
    """On a GPU: forward and the three gradients against the float64 CPU computation."""
    B, C, G, H, W, K, d, s = case
    cpu = make(B, C, G, H, W, K, s, dtype=dtype, seed=7)
    dev = tuple(t.cuda().requires_grad_() for t in cpu)
    out = ddf(*dev, K, d, s, combine)
    assert out.dtype == dtype and out.is_cuda
    ref_in = tuple(t.double().requires_grad_() for t in cpu)
    ref = ddf(*ref_in, K, d, s, combine)
    assert max_rel_err(out, ref) < tol
    grad = torch.randn(ref.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, dev, grad.to('cuda', dtype))
    want = torch.autograd.grad(ref, ref_in, grad)
    for g, w in zip(got, want):
        assert g.shape == w.shape and max_rel_err(g, w) < 4 * tol
