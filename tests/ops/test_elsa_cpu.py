"""The CPU kernels of the ELSA operator against the float64 unfold reference."""
import pytest
import torch

from mmelsa.ops import ELSAAttentionOp, elsa_attention, info
from mmelsa.ops.reference import elsa_reference

from ._helpers import PER_SAMPLE, as_double_cpu, make_inputs, max_rel_err

# (B, C, G, H, W, K, dilation, stride): odd sizes, maps smaller than K, dilation and stride,
# one / two / three+ heads.
CASES = [
    (2, 6, 3, 9, 11, 3, 1, 1),
    (1, 4, 1, 7, 5, 1, 1, 1),
    (2, 6, 2, 5, 4, 5, 1, 1),
    (1, 8, 4, 3, 2, 7, 1, 1),  # the map is smaller than the kernel
    (2, 10, 5, 13, 9, 7, 2, 1),
    (1, 9, 3, 11, 12, 9, 1, 2),
    (2, 12, 4, 15, 13, 5, 2, 2),
    (1, 4, 2, 6, 7, 3, 3, 3),
    (1, 3, 3, 1, 1, 3, 1, 1),  # a single pixel
    (3, 4, 2, 9, 8, 3, 1, 2),  # DDF-ResNet's K = 3 with stride 2
]
# (ghost_mul, ghost_add): True shared by the batch (C, K, K), PER_SAMPLE one per sample
# (B, C, K, K): alone (DDF's multiplicative and additive forms) and mixed with shared ones.
SAMPLE_GHOSTS = [(PER_SAMPLE, False), (False, PER_SAMPLE), (True, PER_SAMPLE),
                 (PER_SAMPLE, PER_SAMPLE)]
GHOSTS = [(True, True), (True, False), (False, True), (False, False)] + SAMPLE_GHOSTS


def test_info_reports_extension():
    i = info()
    assert i['ext_loaded'] is True
    assert isinstance(i['with_cuda'], bool) and isinstance(i['cuda_version'], str)
    assert (i['cuda_version'] != '') == i['with_cuda']


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('ghosts', GHOSTS)
def test_forward_float64_matches_reference(case, ghosts):
    B, C, G, H, W, K, d, s = case
    x, a, gm, ga = make_inputs(B, C, G, H, W, K, d, s, *ghosts)
    out = elsa_attention(x, a, gm, ga, K, d, s)
    ref = elsa_reference(x, a, gm, ga, K, d, s)
    assert out.shape == (B, C, (H - 1) // s + 1, (W - 1) // s + 1)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.bfloat16, 1e-2),
                                       (torch.float16, 2e-3)])
@pytest.mark.parametrize('case', CASES[::2])
def test_forward_low_precision(dtype, tol, case):
    B, C, G, H, W, K, d, s = case
    inputs = make_inputs(B, C, G, H, W, K, d, s, dtype=dtype)
    out = elsa_attention(*inputs, K, d, s)
    assert out.dtype == dtype
    ref = elsa_reference(*as_double_cpu(inputs), K, d, s)
    assert max_rel_err(out, ref) < tol


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('ghosts', [(True, True), (False, True), (True, False)] + SAMPLE_GHOSTS)
def test_backward_float64_matches_reference_autograd(case, ghosts):
    B, C, G, H, W, K, d, s = case
    inputs = make_inputs(B, C, G, H, W, K, d, s, *ghosts, requires_grad=True)
    ref_inputs = as_double_cpu(inputs, requires_grad=True)
    out = elsa_attention(*inputs, K, d, s)
    ref = elsa_reference(*ref_inputs, K, d, s)
    grad = torch.randn_like(out)
    live = [t for t in inputs if t is not None]
    live_ref = [t for t in ref_inputs if t is not None]
    grads = torch.autograd.grad(out, live, grad)
    grads_ref = torch.autograd.grad(ref, live_ref, grad)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize('ghosts', [(True, True), (PER_SAMPLE, PER_SAMPLE)])
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_backward_low_precision(dtype, tol, ghosts):
    B, C, G, H, W, K, d, s = 2, 8, 2, 11, 9, 5, 2, 1
    inputs = make_inputs(B, C, G, H, W, K, d, s, *ghosts, dtype=dtype, requires_grad=True)
    ref_inputs = as_double_cpu(inputs, requires_grad=True)
    out = elsa_attention(*inputs, K, d, s)
    ref = elsa_reference(*ref_inputs, K, d, s)
    grad = torch.randn(out.shape, dtype=torch.float64)
    grads = torch.autograd.grad(out, inputs, grad.to(dtype))
    grads_ref = torch.autograd.grad(ref, ref_inputs, grad.to(dtype).double())
    for g, r in zip(grads, grads_ref):
        assert g.dtype == dtype
        assert max_rel_err(g, r) < tol


def test_only_requested_gradients_are_computed():
    x, a, gm, ga = make_inputs(1, 4, 2, 6, 5, 3)
    x.requires_grad_(True)
    out = elsa_attention(x, a, gm, ga, 3)
    (gx, ) = torch.autograd.grad(out.sum(), [x])
    xr = x.detach().clone().requires_grad_(True)
    (gr, ) = torch.autograd.grad(elsa_reference(xr, a, gm, ga, 3).sum(), [xr])
    torch.testing.assert_close(gx, gr)
    # the raw op returns (0,) placeholders for gradients that were not asked for
    g = torch.ops.mmelsa.elsa_backward(torch.ones_like(out), x.detach(), a, gm, ga, 3, 1, 1,
                                       [False, True, False, False])
    assert g[0].numel() == 0 and g[2].numel() == 0 and g[3].numel() == 0
    assert g[1].shape == a.shape


@pytest.mark.parametrize('case', [(1, 4, 2, 5, 6, 3, 1, 1), (2, 3, 1, 4, 5, 5, 2, 2),
                                  (1, 6, 3, 6, 5, 3, 1, 2)])
def test_gradcheck_float64(case):
    B, C, G, H, W, K, d, s = case
    inputs = make_inputs(B, C, G, H, W, K, d, s, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: elsa_attention(*t, K, d, s), inputs)


@pytest.mark.parametrize('ghosts', SAMPLE_GHOSTS)
@pytest.mark.parametrize('case', [(2, 4, 2, 5, 6, 3, 1, 2), (3, 3, 1, 4, 5, 5, 2, 1)])
def test_gradcheck_per_sample_ghosts(case, ghosts):
    B, C, G, H, W, K, d, s = case
    inputs = make_inputs(B, C, G, H, W, K, d, s, *ghosts, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: elsa_attention(*t, K, d, s), inputs)


@pytest.mark.parametrize('ghosts', [(True, True), (PER_SAMPLE, True)])
def test_empty_batch(ghosts):
    x, a, gm, ga = make_inputs(0, 6, 3, 5, 7, 3, 1, 1, *ghosts, requires_grad=True)
    out = elsa_attention(x, a, gm, ga, 3)
    assert out.shape == (0, 6, 5, 7)
    out.sum().backward()
    assert x.grad.shape == x.shape and a.grad.shape == a.shape
    assert gm.grad.shape == gm.shape and ga.grad.shape == ga.shape
    assert torch.count_nonzero(gm.grad) == 0 and torch.count_nonzero(ga.grad) == 0


def test_non_contiguous_inputs():
    B, C, G, H, W, K = 2, 6, 3, 7, 9, 3
    x, a, gm, ga = make_inputs(B, C, G, H, W, K)
    # channels-last x, a sliced attention, transposed ghosts
    x_nc = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    a_big = torch.randn(B, G, K * K, H, 2 * W, dtype=torch.float64)
    a_big[..., ::2] = a
    a_nc = a_big[..., ::2]
    gm_nc = gm.transpose(1, 2).contiguous().transpose(1, 2)
    ga_nc = ga.transpose(1, 2).contiguous().transpose(1, 2)
    assert not (x_nc.is_contiguous() or a_nc.is_contiguous() or gm_nc.is_contiguous())
    expected = elsa_attention(x, a, gm, ga, K)
    # with an NCHW x, strided attention and ghosts are made contiguous: the same kernel, bitwise
    torch.testing.assert_close(elsa_attention(x, a_nc, gm_nc, ga_nc, K), expected,
                               rtol=0, atol=0)
    # a channels-last x takes the channels-last kernels (test_elsa_channels_last.py): another
    # summation (FMA) rounding, so compared with the float64 reference
    torch.testing.assert_close(elsa_attention(x_nc, a_nc, gm_nc, ga_nc, K),
                               elsa_reference(x, a, gm, ga, K), rtol=1e-12, atol=1e-12)
    # and the backward of a non-contiguous upstream gradient
    xg = x_nc.clone().requires_grad_(True)
    out = elsa_attention(xg, a_nc, gm_nc, ga_nc, K)
    grad = torch.randn(B, C, W, H, dtype=torch.float64).transpose(2, 3)
    out.backward(grad)
    xr = x.clone().requires_grad_(True)
    elsa_reference(xr, a, gm, ga, K).backward(grad.contiguous())
    torch.testing.assert_close(xg.grad, xr.grad)


@pytest.mark.parametrize('ghosts', [(True, True), (PER_SAMPLE, True), (True, PER_SAMPLE)])
def test_ghost_gradients_are_deterministic(ghosts):
    inputs = make_inputs(3, 8, 2, 12, 10, 5, 1, 1, *ghosts, dtype=torch.float32,
                         requires_grad=True)
    grads = []
    for _ in range(2):
        out = elsa_attention(*inputs, 5)
        grads.append(torch.autograd.grad(out, inputs, torch.ones_like(out)))
    for g1, g2 in zip(*grads):
        assert torch.equal(g1, g2)


def test_module_wrapper():
    op = ELSAAttentionOp(kernel_size=5, dilation=2, stride=2)
    assert 'kernel_size=5, dilation=2, stride=2' in repr(op)
    x, a, gm, ga = make_inputs(1, 4, 2, 9, 8, 5, 2, 2)
    torch.testing.assert_close(op(x, a, gm, ga), elsa_reference(x, a, gm, ga, 5, 2, 2))
    with pytest.raises(ValueError, match='kernel_size'):
        ELSAAttentionOp(kernel_size=4)
