"""Second and third derivatives of the ELSA operator (gradient penalties, double backward),
and a shape-only trace on the meta device. Before the fix, double backward returned zeros."""
import pytest
import torch

from mmelsa.ops import elsa_attention
from mmelsa.ops.reference import elsa_reference

from ._helpers import make_inputs

CASES = [(1, 4, 2, 5, 6, 3, 1, 1), (2, 3, 1, 4, 5, 5, 2, 2), (1, 6, 3, 6, 5, 3, 1, 2)]
GHOSTS = [(True, True), (True, False), (False, True), (False, False)]


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('ghosts', GHOSTS)
def test_gradgradcheck_float64(case, ghosts):
    B, C, G, H, W, K, d, s = case
    inputs = [t for t in make_inputs(B, C, G, H, W, K, d, s, *ghosts, requires_grad=True)]
    present = [t for t in inputs if t is not None]

    def op(*tensors):
        it = iter(tensors)
        args = [next(it) if t is not None else None for t in inputs]
        return elsa_attention(*args, K, d, s)

    assert torch.autograd.gradgradcheck(op, present)


def test_gradient_penalty_matches_float64_reference():
    """d/dtheta |d out/d x|^2, the WGAN-GP pattern, against the pure-PyTorch reference."""
    B, C, G, H, W, K, d, s = 2, 4, 2, 6, 5, 3, 1, 1

    def penalty_grads(fn):
        x, a, gm, ga = make_inputs(B, C, G, H, W, K, d, s, requires_grad=True, seed=3)
        weight = torch.randn(B, C, H, W, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(7))
        out = fn(x, a, gm, ga, K, d, s)
        (gx, ) = torch.autograd.grad((out * weight).sum(), [x], create_graph=True)
        return torch.autograd.grad((gx**2).sum(), [x, a, gm, ga], allow_unused=True)

    ours = penalty_grads(elsa_attention)
    ref = penalty_grads(elsa_reference)
    for name, g, r in zip(('x', 'attn', 'ghost_mul', 'ghost_add'), ours, ref):
        r = torch.zeros_like(g) if r is None and g is not None else r
        assert g is not None and r is not None, name
        assert g.abs().max() > 0 or r.abs().max() == 0, name
        torch.testing.assert_close(g, r, msg=name)


def test_third_derivative_matches_reference():
    B, C, G, H, W, K, d, s = 1, 2, 1, 4, 4, 3, 1, 1

    def third(fn):
        x, a, gm, ga = make_inputs(B, C, G, H, W, K, d, s, requires_grad=True, seed=4)
        out = fn(x, a, gm, ga, K, d, s)
        (g1, ) = torch.autograd.grad(out.pow(2).sum(), [x], create_graph=True)
        (g2, ) = torch.autograd.grad(g1.pow(2).sum(), [a], create_graph=True)
        (g3, ) = torch.autograd.grad(g2.sum(), [gm])
        return g3

    torch.testing.assert_close(third(elsa_attention), third(elsa_reference))


def test_shape_only_trace_on_meta():
    x = torch.empty(2, 6, 9, 11, device='meta')
    attn = torch.empty(2, 3, 9, 5, 6, device='meta')
    ghost = torch.empty(6, 3, 3, device='meta')
    out = elsa_attention(x, attn, ghost, ghost, kernel_size=3, stride=2)
    assert out.device.type == 'meta' and out.shape == (2, 6, 5, 6)
