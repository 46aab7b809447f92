"""torch.library integration: opcheck, fake kernels, torch.compile, autocast."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from mmelsa.ops import elsa_attention
from mmelsa.ops.reference import elsa_reference

from ._helpers import as_double_cpu, make_inputs, max_rel_err


@pytest.mark.parametrize('ghosts', [(True, True), (False, True), (False, False)])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_opcheck_forward(ghosts, dtype):
    x, a, gm, ga = make_inputs(2, 6, 3, 7, 5, 3, 2, 2, *ghosts, dtype=dtype,
                               requires_grad=True)
    torch.library.opcheck(torch.ops.mmelsa.elsa_forward.default, (x, a, gm, ga, 3, 2, 2))


@pytest.mark.parametrize('mask', [[True, True, True, True], [False, True, False, True],
                                  [True, False, False, False]])
def test_opcheck_backward(mask):
    x, a, gm, ga = make_inputs(2, 6, 3, 7, 5, 3, 1, 2)
    grad = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.mmelsa.elsa_backward.default,
                          (grad, x, a, gm, ga, 3, 1, 2, mask))


def test_fake_tensor_shape_propagation():
    with FakeTensorMode():
        x = torch.empty(2, 12, 15, 9)
        a = torch.empty(2, 4, 25, 8, 5)
        ga = torch.empty(12, 5, 5)
        out = elsa_attention(x, a, None, ga, 5, 1, 2)
        assert out.shape == (2, 12, 8, 5) and out.dtype == torch.float32
        gx, gattn, gmul, gadd = torch.ops.mmelsa.elsa_backward(out, x, a, None, ga, 5, 1, 2,
                                                               [True, True, True, True])
        assert gx.shape == x.shape and gattn.shape == a.shape
        assert gmul.shape == (0, ) and gadd.shape == ga.shape


def _elsa_loss(x, a, gm, ga):
    return (elsa_attention(x, a, gm, ga, 3, 1, 1) * 1.5).sin().sum()


def test_torch_compile_fullgraph_inductor():
    torch._dynamo.reset()
    compiled = torch.compile(_elsa_loss, fullgraph=True, backend='inductor')
    inputs = make_inputs(2, 6, 3, 7, 8, 3, dtype=torch.float32, requires_grad=True)
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    ref_inputs = tuple(t.detach().clone().requires_grad_(True) for t in inputs)
    ref_loss = _elsa_loss(*ref_inputs)
    ref_grads = torch.autograd.grad(ref_loss, ref_inputs)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_autocast_cpu_bfloat16():
    x, a, gm, ga = make_inputs(2, 6, 3, 7, 8, 3, dtype=torch.float32, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        # mixed dtypes (a bf16 activation, fp32 parameters) are normal under autocast
        out = elsa_attention(x.to(torch.bfloat16), a, gm, ga, 3)
        assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    for t in (x, a, gm, ga):
        assert t.grad is not None and t.grad.dtype == torch.float32
    ref = elsa_reference(*as_double_cpu([t.to(torch.bfloat16) for t in (x, a, gm, ga)]), 3)
    assert max_rel_err(out, ref) < 1e-2


def test_autocast_does_not_touch_float64():
    x, a, gm, ga = make_inputs(1, 4, 2, 5, 5, 3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = elsa_attention(x, a, gm, ga, 3)
    assert out.dtype == torch.float64


def test_autocast_kernel_of_raw_op():
    """The autocast kernel is registered in C++: the raw op casts too."""
    x, a, gm, ga = make_inputs(1, 4, 2, 5, 6, 3, dtype=torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = torch.ops.mmelsa.elsa_forward(x, a.to(torch.bfloat16), gm, ga, 3, 1, 1)
    assert out.dtype == torch.bfloat16
    expected = elsa_attention(*(t.to(torch.bfloat16) for t in (x, a, gm, ga)), 3)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
