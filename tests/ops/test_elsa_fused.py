"""The fused softmax + ELSA operator (``attn_is_logits=True``) on the CPU, against the float64
reference ``elsa_reference(x, logits.softmax(2), ...)``: values, first and higher derivatives,
torch.library integration (opcheck, fake kernels, torch.compile, autocast) and errors."""
import pytest
import torch

from mmelsa.ops import elsa_attention
from mmelsa.ops.reference import elsa_reference, max_rel_err

from ._helpers import PER_SAMPLE, as_double_cpu, make_inputs

# (B, C, G, H, W, K, dilation, stride)
CASES = [
    (2, 6, 3, 9, 11, 3, 1, 1),
    (1, 4, 1, 7, 5, 1, 1, 1),  # K = 1: the softmax of one tap is 1
    (2, 6, 2, 5, 4, 5, 1, 1),
    (1, 8, 4, 3, 2, 7, 1, 1),  # the map is smaller than the kernel
    (2, 10, 5, 13, 9, 7, 2, 1),
    (1, 9, 3, 11, 12, 9, 1, 2),
    (1, 4, 2, 6, 7, 3, 3, 3),
    (3, 4, 2, 9, 8, 3, 1, 2),  # DDF-ResNet's K = 3 with stride 2
]
# (ghost_mul, ghost_add): True shared by the batch (C, K, K), PER_SAMPLE one per sample
# (B, C, K, K): alone (DDF's multiplicative and additive forms) and mixed with shared ones.
SAMPLE_GHOSTS = [(PER_SAMPLE, False), (False, PER_SAMPLE), (True, PER_SAMPLE),
                 (PER_SAMPLE, PER_SAMPLE)]
GHOSTS = [(True, True), (True, False), (False, True), (False, False)] + SAMPLE_GHOSTS


def fused_inputs(case, ghosts=(True, True), dtype=torch.float64, requires_grad=False, seed=0,
                 scale=3.0):
    """make_inputs with the attention scaled to logits of a few units (peaked softmaxes)."""
    B, C, G, H, W, K, d, s = case
    x, a, gm, ga = make_inputs(B, C, G, H, W, K, d, s, *ghosts, seed=seed)
    a = a * scale
    return tuple(None if t is None else t.to(dtype).requires_grad_(requires_grad)
                 for t in (x, a, gm, ga))


def reference(x, logits, gm, ga, K, d, s):
    """The float64 reference of the fused op: softmax over the taps, then the unfold sum."""
    return elsa_reference(x, logits.softmax(2), gm, ga, K, d, s)


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('ghosts', GHOSTS)
def test_forward_float64_matches_reference(case, ghosts):
    K, d, s = case[5:]
    x, a, gm, ga = fused_inputs(case, ghosts)
    out = elsa_attention(x, a, gm, ga, K, d, s, attn_is_logits=True)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference(x, a, gm, ga, K, d, s), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('case', [(1, 4, 2, 5, 150, 7, 1, 1), (1, 2, 1, 4, 301, 5, 2, 2),
                                  (2, 2, 2, 3, 256, 3, 1, 1), (1, 2, 1, 3, 129, 7, 3, 1)])
def test_forward_wide_rows(dtype, case):
    """Rows of more than one 128-column block of the CPU kernel, with a tail block (or none,
    256), stride and dilation: every column against the reference."""
    K, d, s = case[5:]
    inputs = fused_inputs(case, dtype=dtype)
    out = elsa_attention(*inputs, K, d, s, attn_is_logits=True)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert max_rel_err(out, reference(*as_double_cpu(inputs), K, d, s)) < tol


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.bfloat16, 1e-2),
                                       (torch.float16, 2e-3)])
@pytest.mark.parametrize('case', CASES[::2])
def test_forward_low_precision(dtype, tol, case):
    K, d, s = case[5:]
    inputs = fused_inputs(case, dtype=dtype)
    out = elsa_attention(*inputs, K, d, s, attn_is_logits=True)
    assert out.dtype == dtype
    assert max_rel_err(out, reference(*as_double_cpu(inputs), K, d, s)) < tol


def test_softmax_is_taken_stably():
    """Logits of +-1e4 (exp overflows without the max subtraction) give the reference."""
    case = CASES[0]
    K, d, s = case[5:]
    x, a, gm, ga = fused_inputs(case, dtype=torch.float32)
    a = a * 1e3 + 1e4
    out = elsa_attention(x, a, gm, ga, K, d, s, attn_is_logits=True)
    assert torch.isfinite(out).all()
    assert max_rel_err(out, reference(*as_double_cpu((x, a, gm, ga)), K, d, s)) < 1e-5


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_nan_logit_poisons_its_pixel_only(dtype):
    """As with torch's softmax, a NaN logit makes its pixel's probabilities NaN (the fp32 exp
    of the CPU kernel keeps NaN), and with K = 1 nothing else."""
    x, a, gm, ga = fused_inputs((1, 4, 2, 5, 6, 1, 1, 1), dtype=dtype)
    a[0, 1, 0, 2, 3] = float('nan')
    out = elsa_attention(x, a, gm, ga, 1, attn_is_logits=True)
    nan = torch.isnan(out)
    assert nan[0, 2:, 2, 3].all() and nan.sum() == 2


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('ghosts', [(True, True), (False, True), (True, False)] + SAMPLE_GHOSTS)
def test_backward_float64_matches_reference(case, ghosts):
    K, d, s = case[5:]
    inputs = fused_inputs(case, ghosts, requires_grad=True)
    ref_inputs = as_double_cpu(inputs, requires_grad=True)
    out = elsa_attention(*inputs, K, d, s, attn_is_logits=True)
    ref = reference(*ref_inputs, K, d, s)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    live = [t for t in inputs if t is not None]
    grads = torch.autograd.grad(out, live, grad)
    grads_ref = torch.autograd.grad(ref, [t for t in ref_inputs if t is not None], grad)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize('ghosts', [(True, True), (PER_SAMPLE, PER_SAMPLE)])
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.bfloat16, 2e-2),
                                       (torch.float16, 4e-3)])
def test_backward_low_precision(dtype, tol, ghosts):
    case = (2, 8, 2, 11, 9, 5, 2, 1)
    K, d, s = case[5:]
    inputs = fused_inputs(case, ghosts, dtype=dtype, requires_grad=True)
    ref_inputs = as_double_cpu(inputs, requires_grad=True)
    out = elsa_attention(*inputs, K, d, s, attn_is_logits=True)
    grad = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(out, inputs, grad)
    grads_ref = torch.autograd.grad(reference(*ref_inputs, K, d, s), ref_inputs, grad.double())
    for name, g, r in zip(('x', 'logits', 'ghost_mul', 'ghost_add'), grads, grads_ref):
        assert g.dtype == dtype
        scale = 4 if name.startswith('ghost') and dtype != torch.float32 else 1
        assert max_rel_err(g, r) < tol * scale, name


@pytest.mark.parametrize('mask', [[True, False, False, False], [False, True, False, False],
                                  [False, False, True, False], [False, False, False, True]])
def test_each_gradient_alone(mask):
    """Each entry of output_mask alone gives the reference's gradient and (0,) elsewhere."""
    case = CASES[4]
    K, d, s = case[5:]
    x, a, gm, ga = fused_inputs(case)
    go = torch.randn(2, 10, 13, 9, dtype=torch.float64)
    grads = torch.ops.mmelsa.elsa_softmax_backward(go, x, a, gm, ga, K, d, s, mask)
    ref_inputs = as_double_cpu((x, a, gm, ga), requires_grad=True)
    ref_grads = torch.autograd.grad(reference(*ref_inputs, K, d, s), ref_inputs, go)
    for wanted, g, r in zip(mask, grads, ref_grads):
        if wanted:
            torch.testing.assert_close(g, r, rtol=1e-11, atol=1e-11)
        else:
            assert g.numel() == 0


@pytest.mark.parametrize('case', [(1, 4, 2, 5, 6, 3, 1, 1), (2, 3, 1, 4, 5, 5, 2, 2),
                                  (1, 6, 3, 6, 5, 3, 1, 2)])
def test_gradcheck_float64(case):
    K, d, s = case[5:]
    inputs = fused_inputs(case, requires_grad=True, scale=1.0)
    assert torch.autograd.gradcheck(
        lambda *t: elsa_attention(*t, K, d, s, attn_is_logits=True), inputs)


@pytest.mark.parametrize('ghosts', SAMPLE_GHOSTS)
@pytest.mark.parametrize('case', [(2, 4, 2, 5, 6, 3, 1, 2), (3, 3, 1, 4, 5, 5, 2, 1)])
def test_gradcheck_per_sample_ghosts(case, ghosts):
    K, d, s = case[5:]
    inputs = fused_inputs(case, ghosts, requires_grad=True, scale=1.0)
    assert torch.autograd.gradcheck(
        lambda *t: elsa_attention(*t, K, d, s, attn_is_logits=True), inputs)


@pytest.mark.parametrize('case', [(1, 4, 2, 5, 6, 3, 1, 1), (1, 6, 3, 6, 5, 3, 1, 2)])
@pytest.mark.parametrize('ghosts', [(True, True), (False, True)])
def test_gradgradcheck_float64(case, ghosts):
    """Double backward through the fused op (create_graph builds it from differentiable
    pieces): the numerical second derivative agrees."""
    K, d, s = case[5:]
    inputs = [t for t in fused_inputs(case, ghosts, requires_grad=True, scale=1.0)
              if t is not None]

    def op(x, a, *ghost):
        gm, ga = ghost if len(ghost) == 2 else (None, ghost[0])
        return elsa_attention(x, a, gm, ga, K, d, s, attn_is_logits=True)

    assert torch.autograd.gradgradcheck(op, inputs)


def test_gradient_penalty_matches_float64_reference():
    """d/dtheta |d out / d x|^2 and |d out / d logits|^2 against the reference's."""
    case = (2, 4, 2, 6, 5, 3, 1, 1)
    K, d, s = case[5:]
    weight = torch.randn(2, 4, 6, 5, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(7))

    def penalty_grads(fn, wrt):
        x, a, gm, ga = fused_inputs(case, requires_grad=True, seed=3)
        out = fn(x, a, gm, ga)
        (g, ) = torch.autograd.grad((out * weight).sum(), [(x, a)[wrt]], create_graph=True)
        return torch.autograd.grad((g**2).sum(), [x, a, gm, ga], allow_unused=True)

    for wrt in (0, 1):
        ours = penalty_grads(
            lambda *t: elsa_attention(*t, K, d, s, attn_is_logits=True), wrt)
        ref = penalty_grads(lambda *t: reference(*t, K, d, s), wrt)
        for name, g, r in zip(('x', 'logits', 'ghost_mul', 'ghost_add'), ours, ref):
            if r is None:
                assert g is None or not g.any(), name
                continue
            assert g is not None and r.abs().max() > 0, name
            torch.testing.assert_close(g, r, msg=name)


# ------------------------------------------------------------------ torch.library integration
@pytest.mark.parametrize('ghosts', [(True, True), (False, True), (False, False)])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_opcheck_forward(ghosts, dtype):
    inputs = fused_inputs((2, 6, 3, 7, 5, 3, 2, 2), ghosts, dtype=dtype, requires_grad=True)
    torch.library.opcheck(torch.ops.mmelsa.elsa_softmax_forward.default, (*inputs, 3, 2, 2))


@pytest.mark.parametrize('ghosts', [(True, True), (PER_SAMPLE, True)])
@pytest.mark.parametrize('mask', [[True, True, True, True], [False, True, False, True],
                                  [True, False, False, False]])
def test_opcheck_backward(mask, ghosts):
    x, a, gm, ga = fused_inputs((2, 6, 3, 7, 5, 3, 1, 2), ghosts)
    grad = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.mmelsa.elsa_softmax_backward.default,
                          (grad, x, a, gm, ga, 3, 1, 2, mask))


def _fused_loss(x, a, gm, ga):
    return (elsa_attention(x, a, gm, ga, 3, 1, 1, attn_is_logits=True) * 1.5).sin().sum()


def test_torch_compile_fullgraph_inductor():
    torch._dynamo.reset()
    compiled = torch.compile(_fused_loss, fullgraph=True, backend='inductor')
    inputs = fused_inputs((2, 6, 3, 7, 8, 3, 1, 1), dtype=torch.float32, requires_grad=True)
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    ref_inputs = as_double_cpu(inputs, requires_grad=True)
    ref_loss = (reference(*ref_inputs, 3, 1, 1) * 1.5).sin().sum()
    ref_grads = torch.autograd.grad(ref_loss, ref_inputs)
    assert abs(loss.item() - ref_loss.item()) < 1e-4
    for g, r in zip(grads, ref_grads):
        assert max_rel_err(g, r) < 1e-5


def test_compiled_graph_calls_the_fused_ops():
    """The compiled forward and backward call the fused ops, with no softmax of their own."""
    from torch._dynamo.testing import AotEagerAndRecordGraphs
    torch._dynamo.reset()
    backend = AotEagerAndRecordGraphs()
    compiled = torch.compile(_fused_loss, fullgraph=True, backend=backend)
    inputs = fused_inputs((1, 6, 3, 5, 6, 3, 1, 1), dtype=torch.float32, requires_grad=True)
    compiled(*inputs).backward()
    fw = '\n'.join(g.code for g in backend.fw_graphs)
    bw = '\n'.join(g.code for g in backend.bw_graphs)
    assert 'elsa_softmax_forward' in fw and 'softmax.' not in fw.replace('elsa_softmax', '')
    assert 'elsa_softmax_backward' in bw and 'softmax' not in bw.replace('elsa_softmax', '')


def test_autocast_cpu_bfloat16_never_float32():
    x, a, gm, ga = fused_inputs((2, 6, 3, 7, 8, 3, 1, 1), dtype=torch.float32,
                                requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = elsa_attention(x.to(torch.bfloat16), a, gm, ga, 3, attn_is_logits=True)
        raw = torch.ops.mmelsa.elsa_softmax_forward(x, a, gm, ga, 3, 1, 1)
    assert out.dtype == torch.bfloat16 and raw.dtype == torch.bfloat16
    torch.testing.assert_close(out, raw, rtol=0, atol=0)
    out.float().sum().backward()
    for t in (x, a, gm, ga):
        assert t.grad is not None and t.grad.dtype == torch.float32
    ref = reference(*as_double_cpu([t.to(torch.bfloat16) for t in (x, a, gm, ga)]), 3, 1, 1)
    assert max_rel_err(out, ref) < 1e-2


def test_empty_batch():
    x, a, gm, ga = fused_inputs((0, 6, 3, 5, 7, 3, 1, 1), requires_grad=True)
    out = elsa_attention(x, a, gm, ga, 3, attn_is_logits=True)
    assert out.shape == (0, 6, 5, 7)
    out.sum().backward()
    assert x.grad.shape == x.shape and a.grad.shape == a.shape
    assert not gm.grad.any() and not ga.grad.any()


@pytest.mark.parametrize('ghosts', [(True, True), (PER_SAMPLE, PER_SAMPLE)])
def test_deterministic(ghosts):
    inputs = fused_inputs((3, 8, 2, 12, 10, 5, 1, 1), ghosts, dtype=torch.float32,
                          requires_grad=True)
    runs = []
    for _ in range(2):
        out = elsa_attention(*inputs, 5, attn_is_logits=True)
        runs.append([out] + list(torch.autograd.grad(out, inputs, torch.ones_like(out))))
    for r1, r2 in zip(*runs):
        assert torch.equal(r1, r2)


def test_errors_name_the_argument():
    x, a, gm, ga = fused_inputs((2, 6, 3, 7, 5, 3, 1, 1))
    with pytest.raises(TypeError, match='attn_is_logits must be a bool'):
        elsa_attention(x, a, gm, ga, 3, attn_is_logits=1)
    with pytest.raises(ValueError, match=r'attn must have shape'):
        elsa_attention(x, a[:, :, :4], gm, ga, 3, attn_is_logits=True)
    # the raw op names its own argument
    with pytest.raises(ValueError, match=r'logits must have shape'):
        torch.ops.mmelsa.elsa_softmax_forward(x, a[:, :, :4], gm, ga, 3, 1, 1)
    with pytest.raises(ValueError, match=r'logits must be a 5-D tensor'):
        torch.ops.mmelsa.elsa_softmax_forward(x, a[0], gm, ga, 3, 1, 1)
    with pytest.raises(TypeError, match=r'logits has dtype'):
        torch.ops.mmelsa.elsa_softmax_forward(x, a.float(), gm, ga, 3, 1, 1)
    with pytest.raises(ValueError, match=r'grad_out must have shape'):
        torch.ops.mmelsa.elsa_softmax_backward(x[:, :, :4], x, a, gm, ga, 3, 1, 1, [True] * 4)


def test_third_derivative_matches_reference():
    case = (1, 2, 1, 4, 4, 3, 1, 1)
    K, d, s = case[5:]

    def third(fn):
        x, a, gm, ga = fused_inputs(case, requires_grad=True, seed=4, scale=1.0)
        out = fn(x, a, gm, ga)
        (g1, ) = torch.autograd.grad(out.pow(2).sum(), [a], create_graph=True)
        (g2, ) = torch.autograd.grad(g1.pow(2).sum(), [x], create_graph=True)
        (g3, ) = torch.autograd.grad(g2.sum(), [a])
        return g3

    ours = third(lambda *t: elsa_attention(*t, K, d, s, attn_is_logits=True))
    ref = third(lambda *t: reference(*t, K, d, s))
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref)
