"""The CUDA kernels of the ELSA operator against the float64 CPU reference (needs a GPU)."""
import pytest
import torch

from mmelsa.ops import elsa_attention, info
from mmelsa.ops.reference import elsa_reference

from ._helpers import PER_SAMPLE, as_double_cpu, make_inputs, max_rel_err
from .test_elsa_channels_last import channels_last_inputs

pytestmark = pytest.mark.cuda

TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
GRAD_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 4e-3,
            torch.bfloat16: 2e-2}
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# (B, C, G, H, W, K, dilation, stride)
CASES = [
    (2, 6, 3, 9, 11, 1, 1, 1),
    (2, 6, 3, 9, 11, 3, 1, 1),
    (1, 8, 2, 13, 10, 5, 1, 1),
    (2, 12, 3, 15, 17, 7, 1, 1),
    (1, 6, 2, 12, 11, 9, 1, 1),
    (1, 4, 4, 14, 13, 11, 1, 1),
    (1, 6, 1, 17, 19, 15, 1, 1),
    (2, 8, 4, 4, 3, 7, 1, 1),  # map smaller than the kernel
    (2, 10, 5, 16, 13, 7, 2, 1),
    (1, 9, 3, 15, 14, 3, 1, 2),
    (2, 8, 2, 19, 18, 5, 2, 3),
    (1, 6, 3, 21, 20, 9, 3, 2),
]


def test_info_reports_cuda():
    i = info()
    assert i['with_cuda'] and i['cuda_version']


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('case', CASES)
def test_forward_matches_reference(dtype, case):
    B, C, G, H, W, K, d, s = case
    inputs = make_inputs(B, C, G, H, W, K, d, s, dtype=dtype, device='cuda')
    out = elsa_attention(*inputs, K, d, s)
    assert out.dtype == dtype and out.is_cuda
    ref = elsa_reference(*as_double_cpu(inputs), K, d, s)
    assert max_rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize('ghosts', [(True, False), (False, True), (False, False)])
@pytest.mark.parametrize('case', [CASES[1], CASES[8], CASES[10]])
def test_forward_ghost_variants(ghosts, case):
    B, C, G, H, W, K, d, s = case
    inputs = make_inputs(B, C, G, H, W, K, d, s, *ghosts, dtype=torch.float32, device='cuda')
    ref = elsa_reference(*as_double_cpu(inputs), K, d, s)
    assert max_rel_err(elsa_attention(*inputs, K, d, s), ref) < 1e-5


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('case', CASES)
def test_backward_matches_reference(dtype, case):
    B, C, G, H, W, K, d, s = case
    inputs = make_inputs(B, C, G, H, W, K, d, s, dtype=dtype, device='cuda', requires_grad=True)
    ref_inputs = as_double_cpu(inputs, requires_grad=True)
    out = elsa_attention(*inputs, K, d, s)
    grad = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(out, inputs, grad.cuda())
    ref = elsa_reference(*ref_inputs, K, d, s)
    grads_ref = torch.autograd.grad(ref, ref_inputs, grad.double())
    for name, g, r in zip(('x', 'attn', 'ghost_mul', 'ghost_add'), grads, grads_ref):
        assert g.dtype == dtype and g.is_cuda
        # ghost gradients sum many products: scale the tolerance with the sqrt of the count
        tol = GRAD_TOL[dtype] * (4 if name.startswith('ghost') and dtype != torch.float64
                                 else 1)
        assert max_rel_err(g, r) < tol, name


@pytest.mark.parametrize('ghosts', [(True, False), (False, True)])
def test_backward_partial_ghosts(ghosts):
    B, C, G, H, W, K, d, s = CASES[9]
    inputs = make_inputs(B, C, G, H, W, K, d, s, *ghosts, device='cuda', requires_grad=True)
    live = [t for t in inputs if t is not None]
    ref_live = [t.detach().cpu().requires_grad_(True) for t in live]
    ref_inputs = [None if t is None else ref_live.pop(0) for t in inputs]
    ref_live = [t for t in ref_inputs if t is not None]
    out = elsa_attention(*inputs, K, d, s)
    grads = torch.autograd.grad(out.square().sum(), live)
    ref = elsa_reference(*ref_inputs, K, d, s)
    grads_ref = torch.autograd.grad(ref.square().sum(), ref_live)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g.cpu(), r, rtol=1e-11, atol=1e-11)


def test_gradcheck_cuda_float64():
    inputs = make_inputs(1, 4, 2, 5, 6, 3, 1, 2, device='cuda', requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: elsa_attention(*t, 3, 1, 2), inputs)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_large_swin_stage_shape(dtype):
    """A Swin-T stage-1 sized problem (K = 7, ghost_add only) against the CPU native kernel in
    float64 (the CPU kernel is itself checked against the reference)."""
    B, C, G, H, W, K = 2, 96, 3, 56, 57, 7
    x, a, _, ga = make_inputs(B, C, G, H, W, K, ghost_mul=False, dtype=dtype, device='cuda',
                              requires_grad=True)
    out = elsa_attention(x, a, None, ga, K)
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, a, ga), grad)
    xd, ad, gad = (t.detach().cpu().double().requires_grad_(True) for t in (x, a, ga))
    ref = elsa_attention(xd, ad, None, gad, K)
    grads_ref = torch.autograd.grad(ref, (xd, ad, gad), grad.cpu().double())
    assert max_rel_err(out, ref) < TOL[dtype]
    for g, r in zip(grads, grads_ref):
        assert max_rel_err(g, r) < 4 * GRAD_TOL[dtype]


def test_64bit_indexing():
    """More than 2**31 elements in x and out: offsets must not wrap around."""
    H, W = 32768, 32800  # 2 channels -> 2.15e9 elements > 2**31
    try:
        x = torch.empty(1, 2, H, W, dtype=torch.float16, device='cuda')
        a = torch.empty(1, 1, 1, H, W, dtype=torch.float16, device='cuda')
    except torch.cuda.OutOfMemoryError:
        pytest.skip('not enough GPU memory')
    x.uniform_(-1, 1)
    a.uniform_(-1, 1)
    gm = torch.tensor([1.5, -0.5], dtype=torch.float16, device='cuda').view(2, 1, 1)
    ga = torch.tensor([0.25, 2.0], dtype=torch.float16, device='cuda').view(2, 1, 1)
    out = elsa_attention(x, a, gm, ga, kernel_size=1)
    # K = 1: out = x * (gm * a + ga); check the last rows, beyond offset 2**31
    rows = slice(H - 8, H)
    expect = (x[:, 1, rows].float() * (gm[1].float() * a[:, 0, 0, rows].float() +
                                        ga[1].float())).half()
    assert x[:, 1, rows].storage_offset() > 2**31
    torch.testing.assert_close(out[:, 1, rows], expect, rtol=2e-3, atol=2e-3)
    del x, a, out


def test_gradients_are_deterministic():
    inputs = make_inputs(2, 12, 3, 33, 29, 7, dtype=torch.float32, device='cuda',
                         requires_grad=True)
    runs = []
    for _ in range(2):
        out = elsa_attention(*inputs, 7)
        runs.append(torch.autograd.grad(out, inputs, torch.ones_like(out)))
    for g1, g2 in zip(*runs):
        assert torch.equal(g1, g2)


def test_empty_batch_and_non_contiguous_cuda():
    x, a, gm, ga = make_inputs(0, 6, 3, 5, 7, 3, device='cuda', requires_grad=True)
    out = elsa_attention(x, a, gm, ga, 3)
    assert out.shape == (0, 6, 5, 7)
    out.sum().backward()
    assert torch.count_nonzero(gm.grad) == 0
    x, a, gm, ga = make_inputs(2, 6, 3, 7, 9, 3, device='cuda')
    x_nc = x.to(memory_format=torch.channels_last)
    a_nc = a.transpose(3, 4).contiguous().transpose(3, 4)
    assert not x_nc.is_contiguous() and not a_nc.is_contiguous()
    torch.testing.assert_close(elsa_attention(x_nc, a_nc, gm, ga, 3),
                               elsa_attention(x, a, gm, ga, 3), rtol=0, atol=0)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_cuda(dtype):
    x, a, gm, ga = make_inputs(2, 6, 3, 9, 8, 3, dtype=torch.float32, device='cuda',
                               requires_grad=True)
    with torch.autocast('cuda', dtype=dtype):
        out = elsa_attention(x, a, gm, ga, 3)
    assert out.dtype == dtype
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in (x, a, gm, ga))


def test_mixed_devices_rejected():
    x, a, gm, ga = make_inputs(2, 6, 3, 7, 5, 3)
    with pytest.raises(ValueError, match=r'attn is on cuda:0 but x is on cpu'):
        elsa_attention(x, a.cuda(), gm, ga, 3)
    with pytest.raises(ValueError, match=r'ghost_add is on cuda:0 but x is on cpu'):
        torch.ops.mmelsa.elsa_forward(x, a, gm, ga.cuda(), 3, 1, 1)


def test_opcheck_cuda():
    x, a, gm, ga = make_inputs(2, 6, 3, 7, 5, 5, 2, 2, dtype=torch.float32, device='cuda',
                               requires_grad=True)
    torch.library.opcheck(torch.ops.mmelsa.elsa_forward.default, (x, a, gm, ga, 5, 2, 2))
    grad = torch.randn(2, 6, 4, 3, device='cuda')
    torch.library.opcheck(torch.ops.mmelsa.elsa_backward.default,
                          (grad, x.detach(), a.detach(), gm.detach(), ga.detach(), 5, 2, 2,
                           [True, True, True, True]))


def test_torch_compile_cuda():
    def f(x, a, ga):
        return elsa_attention(x, a, None, ga, 7).relu().sum()

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    x, a, _, ga = make_inputs(2, 12, 3, 14, 15, 7, ghost_mul=False, dtype=torch.float32,
                              device='cuda', requires_grad=True)
    grads = torch.autograd.grad(compiled(x, a, ga), (x, a, ga))
    grads_ref = torch.autograd.grad(f(x, a, ga), (x, a, ga))
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r)


# ------------------------------------------------------- fused softmax + ELSA (attn_is_logits)
def _fused_ref(inputs, K, d, s):
    x, a, gm, ga = as_double_cpu(inputs, requires_grad=True)
    return (x, a, gm, ga), elsa_reference(x, a.softmax(2), gm, ga, K, d, s)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('case', CASES)
def test_fused_forward_backward_match_reference(dtype, case):
    B, C, G, H, W, K, d, s = case
    x, a, gm, ga = make_inputs(B, C, G, H, W, K, d, s, dtype=torch.float64)
    inputs = [t.mul(3 if i == 1 else 1).to('cuda', dtype).requires_grad_(True)
              for i, t in enumerate((x, a, gm, ga))]
    out = elsa_attention(*inputs, K, d, s, attn_is_logits=True)
    assert out.dtype == dtype and out.is_cuda
    ref_inputs, ref = _fused_ref(inputs, K, d, s)
    assert max_rel_err(out, ref) < TOL[dtype]
    grad = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(out, inputs, grad.cuda())
    grads_ref = torch.autograd.grad(ref, ref_inputs, grad.double())
    for name, g, r in zip(('x', 'logits', 'ghost_mul', 'ghost_add'), grads, grads_ref):
        tol = GRAD_TOL[dtype] * (4 if name.startswith('ghost') and dtype != torch.float64
                                 else 1)
        assert g.dtype == dtype and max_rel_err(g, r) < tol, name


def test_fused_gradcheck_and_gradgradcheck_cuda_float64():
    inputs = make_inputs(1, 4, 2, 5, 6, 3, 1, 2, device='cuda', requires_grad=True)

    def op(*t):
        return elsa_attention(*t, 3, 1, 2, attn_is_logits=True)

    assert torch.autograd.gradcheck(op, inputs)
    assert torch.autograd.gradgradcheck(op, inputs)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_fused_autocast_cuda_never_float32(dtype):
    x, a, gm, ga = make_inputs(2, 6, 3, 9, 8, 3, dtype=torch.float32, device='cuda',
                               requires_grad=True)
    with torch.autocast('cuda', dtype=dtype):
        out = elsa_attention(x, a, gm, ga, 3, attn_is_logits=True)
    assert out.dtype == dtype
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in (x, a, gm, ga))
    _, ref = _fused_ref([t.detach().to(dtype) for t in (x, a, gm, ga)], 3, 1, 1)
    assert max_rel_err(out, ref) < TOL[dtype]


def test_fused_opcheck_and_compile_cuda():
    x, a, gm, ga = make_inputs(2, 6, 3, 7, 5, 5, 2, 2, dtype=torch.float32, device='cuda',
                               requires_grad=True)
    torch.library.opcheck(torch.ops.mmelsa.elsa_softmax_forward.default,
                          (x, a, gm, ga, 5, 2, 2))
    grad = torch.randn(2, 6, 4, 3, device='cuda')
    torch.library.opcheck(torch.ops.mmelsa.elsa_softmax_backward.default,
                          (grad, x.detach(), a.detach(), gm.detach(), ga.detach(), 5, 2, 2,
                           [True, True, True, True]))

    def f(x, a, ga):
        return elsa_attention(x, a, None, ga, 5, 2, 2, attn_is_logits=True).relu().sum()

    torch._dynamo.reset()
    grads = torch.autograd.grad(torch.compile(f, fullgraph=True)(x, a, ga), (x, a, ga))
    grads_ref = torch.autograd.grad(f(x, a, ga), (x, a, ga))
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r)


# ------------------------------------------- channels-last inputs on the tiled path (K = 7)
@pytest.mark.parametrize('logits', [False, True])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float16])
def test_channels_last_in_place_cuda(dtype, logits):
    """Read in place, channels-last results (grad_attn pixel-major), right values."""
    inputs = [t.detach().requires_grad_(True)  # detach keeps the strides
              for t in channels_last_inputs((2, 64, 2, 17, 40, 7, 1, 1), dtype=dtype,
                                            device='cuda')]
    out = elsa_attention(*inputs, 7, attn_is_logits=logits)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn(out.shape, device='cuda', dtype=dtype)
    grads = torch.autograd.grad(out, inputs, grad)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    assert grads[1].permute(0, 3, 4, 1, 2).is_contiguous()
    ref_in = as_double_cpu(inputs, requires_grad=True)
    ref = elsa_reference(ref_in[0], ref_in[1].softmax(2) if logits else ref_in[1], *ref_in[2:],
                         7, 1, 1)
    assert max_rel_err(out, ref) < TOL[dtype]
    for g, r in zip(grads, torch.autograd.grad(ref, ref_in, grad.double().cpu())):
        assert max_rel_err(g, r) < 4 * GRAD_TOL[dtype]


@pytest.mark.parametrize('op', ['elsa_forward', 'elsa_softmax_forward'])
def test_opcheck_channels_last_cuda(op):
    """The fake kernels promise the strides the CUDA channels-last path returns."""
    x, a, gm, ga = [t.detach().requires_grad_(True)
                    for t in channels_last_inputs((2, 12, 3, 9, 10, 7, 1, 1), device='cuda')]
    torch.library.opcheck(getattr(torch.ops.mmelsa, op).default, (x, a, gm, ga, 7, 1, 1))


# ------------------------------------------- per-sample ghosts (B, C, K, K): DDF's channel filter
SAMPLE_GHOSTS = [(PER_SAMPLE, False), (False, PER_SAMPLE), (True, PER_SAMPLE),
                 (PER_SAMPLE, PER_SAMPLE)]


@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
@pytest.mark.parametrize('logits', [False, True], ids=['plain', 'fused'])
@pytest.mark.parametrize('ghosts', SAMPLE_GHOSTS, ids=str)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('case', [(3, 16, 2, 29, 30, 3, 1, 2), (2, 12, 3, 17, 20, 3, 1, 1),
                                  (3, 64, 2, 17, 40, 7, 1, 1), (2, 8, 2, 75, 80, 3, 1, 1)],
                         ids=['K3-s2', 'K3-s1', 'tiled-K7', 'K3-many-chunks'])
def test_per_sample_ghosts_cuda(case, dtype, ghosts, logits, layout):
    """Forward and every gradient, generic (K = 3, stride 2 and 1: DDF-ResNet) and tiled
    kernels, against the float64 reference; bitwise reruns."""
    K, d, s = case[5:]
    if layout == 'nchw':
        inputs = make_inputs(*case, *ghosts, dtype=dtype, device='cuda', requires_grad=True)
    else:
        inputs = [None if t is None else t.detach().requires_grad_(True)
                  for t in channels_last_inputs(case, ghosts, dtype=dtype, device='cuda')]
    live = [t for t in inputs if t is not None]
    ref_in = as_double_cpu(inputs, requires_grad=True)
    out = elsa_attention(*inputs, K, d, s, attn_is_logits=logits)
    grad = torch.randn(out.shape, device='cuda', dtype=dtype)
    grads = torch.autograd.grad(out, live, grad)
    again = torch.autograd.grad(elsa_attention(*inputs, K, d, s, attn_is_logits=logits), live,
                                grad)
    ref = elsa_reference(ref_in[0], ref_in[1].softmax(2) if logits else ref_in[1], *ref_in[2:],
                         K, d, s)
    assert max_rel_err(out, ref) < TOL[dtype]
    ref_grads = torch.autograd.grad(ref, [t for t in ref_in if t is not None],
                                    grad.double().cpu())
    for g, g2, r in zip(grads, again, ref_grads):
        assert g.shape == r.shape and torch.equal(g, g2)
        assert max_rel_err(g, r) < 4 * GRAD_TOL[dtype]
