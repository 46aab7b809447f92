"""Bad input raises a clear error naming the argument: through the Python wrapper and through
the raw op (the C++ checks), which must agree on the exception type."""
import pytest
import torch

from mmelsa.ops import elsa_attention

from ._helpers import make_inputs


def _good():
    return make_inputs(2, 6, 3, 7, 5, 3)  # x, attn, ghost_mul, ghost_add with K = 3


def ghost_shape(name):
    """The message of a ghost of the wrong shape for _good()'s x (B, C = 2, 6) and K = 3:
    both accepted shapes, shared (C, K, K) and per sample (B, C, K, K)."""
    return (r'%s must have shape \(C, K, K\) = \(6, 3, 3\).* or \(B, C, K, K\) = '
            r'\(2, 6, 3, 3\)' % name)


def _cases():
    x, a, gm, ga = _good()
    K = 3
    return [
        # id, (x, attn, ghost_mul, ghost_add, K, d, s), exception, message
        ('x-rank', (x[0], a, gm, ga, K, 1, 1), ValueError, r'x must be a 4-D tensor'),
        ('attn-rank', (x, a[0], gm, ga, K, 1, 1), ValueError, r'attn must be a 5-D tensor'),
        ('x-int', (x.long(), a, gm, ga, K, 1, 1), TypeError, r'x must be a floating-point'),
        ('groups', (x[:, :5], a, gm[:5], ga[:5], K, 1, 1), ValueError,
         r'C = 5.*divisible.*G = attn'),
        ('attn-batch', (x, a[:1], gm, ga, K, 1, 1), ValueError, r'attn must have shape'),
        ('attn-taps', (x, a[:, :, :4], gm, ga, K, 1, 1), ValueError, r'attn must have shape'),
        ('attn-spatial', (x, a[..., :4], gm, ga, K, 1, 1), ValueError, r'attn must have shape'),
        ('attn-stride', (x, a, gm, ga, K, 1, 2), ValueError, r'attn must have shape.*stride 2'),
        ('ghost_mul-shape', (x, a, gm[:, :2], ga, K, 1, 1), ValueError, ghost_shape('ghost_mul')),
        ('ghost_add-shape', (x, a, gm, ga[:4], K, 1, 1), ValueError, ghost_shape('ghost_add')),
        # per sample, (B, C, K, K), but for another batch size
        ('ghost_mul-batch', (x, a, gm.expand(3, 6, 3, 3), ga, K, 1, 1), ValueError,
         ghost_shape('ghost_mul')),
        ('ghost_add-rank', (x, a, gm, ga[None, None], K, 1, 1), ValueError,
         ghost_shape('ghost_add')),
        ('even-K', (x, a, gm, ga, 4, 1, 1), ValueError, r'kernel_size must be a positive odd'),
        ('zero-K', (x, a, gm, ga, 0, 1, 1), ValueError, r'kernel_size must be a positive odd'),
        ('negative-K', (x, a, gm, ga, -3, 1, 1), ValueError,
         r'kernel_size must be a positive odd'),
        ('dilation', (x, a, gm, ga, K, 0, 1), ValueError, r'dilation must be >= 1'),
        ('stride', (x, a, gm, ga, K, 1, 0), ValueError, r'stride must be >= 1'),
        # (K - 1) * 2^62 overflowed int64: a segfault (plain) or wrong values (fused) before
        ('huge-dilation', (x, a, gm, ga, K, 2**62, 1), ValueError, r'must be <= 65536'),
        ('huge-stride', (x, a, gm, ga, K, 1, 2**20), ValueError, r'must be <= 65536'),
        ('huge-K', (x, a, gm, ga, 2**17 + 1, 1, 1), ValueError, r'must be <= 65536'),
        ('attn-dtype', (x, a.float(), gm, ga, K, 1, 1), TypeError,
         r'attn has dtype \S+ but x has dtype'),
        ('ghost_add-dtype', (x, a, gm, ga.float(), K, 1, 1), TypeError,
         r'ghost_add has dtype'),
        ('ghost_mul-device', (x, a, gm.to('meta'), ga, K, 1, 1), ValueError,
         r'ghost_mul is on meta but x is on cpu'),
    ]


CASES = _cases()
# A meta tensor among CPU tensors sends the raw op to its fake (meta) kernel, so the device
# mismatch of the raw op is tested on a GPU (test_elsa_cuda.py).
RAW_CASES = [c for c in CASES if c[0] not in ('x-int', 'ghost_mul-device')]


@pytest.mark.parametrize('args,exc,msg', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_wrapper_rejects(args, exc, msg):
    with pytest.raises(exc, match=msg):
        elsa_attention(*args)


@pytest.mark.parametrize('args,exc,msg', [c[1:] for c in RAW_CASES],
                         ids=[c[0] for c in RAW_CASES])
def test_raw_op_rejects(args, exc, msg):
    with pytest.raises(exc, match=msg):
        torch.ops.mmelsa.elsa_forward(*args)


def test_raw_op_rejects_integer_x():
    x, a, gm, ga = _good()
    with pytest.raises(TypeError, match=r'x must be a floating-point'):
        torch.ops.mmelsa.elsa_forward(x.long(), a.long(), None, None, 3, 1, 1)


def test_wrapper_rejects_non_tensor():
    x, a, gm, ga = _good()
    with pytest.raises(TypeError, match=r'attn must be a torch.Tensor'):
        elsa_attention(x, a.tolist())
    with pytest.raises(TypeError, match=r'ghost_add must be a torch.Tensor or None'):
        elsa_attention(x, a, gm, 1.0, 3)
    with pytest.raises(TypeError, match=r'kernel_size must be an int'):
        elsa_attention(x, a, gm, ga, 3.0)


def test_backward_rejects_bad_grad_out():
    x, a, gm, ga = _good()
    with pytest.raises(ValueError, match=r'grad_out must have shape \(B, C, Ho, Wo\)'):
        torch.ops.mmelsa.elsa_backward(torch.zeros(2, 6, 7, 4, dtype=torch.float64), x, a, gm,
                                       ga, 3, 1, 1, [True, True, True, True])
    with pytest.raises(TypeError, match=r'grad_out has dtype'):
        torch.ops.mmelsa.elsa_backward(torch.zeros(2, 6, 7, 5), x, a, gm, ga, 3, 1, 1,
                                       [True, True, True, True])
