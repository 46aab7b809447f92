"""Argument checks of the public operator API: each raises TypeError / ValueError naming the
faulty argument. The C++ ops check the same things (csrc/), since they can be called directly;
these run first so that Python callers get the message before any dispatch."""
import functools
import warnings

import torch
from torch import Tensor

__all__ = ['MAX_HYPER', 'check_hyperparameters', 'autocast_enabled', 'validate']


#: the largest kernel_size, dilation and stride (the C++ checks use the same bound)
MAX_HYPER = 65536


def check_hyperparameters(kernel_size, dilation, stride):
    """Raise TypeError / ValueError naming the argument unless each is an int in range
    (kernel_size odd); shared with :class:`mmelsa.models.ELSAAttention`."""
    for name, value in (('kernel_size', kernel_size), ('dilation', dilation),
                        ('stride', stride)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError('elsa_attention: %s must be an int, got %r' % (name, value))
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError('elsa_attention: kernel_size must be a positive odd integer, got %d' %
                         kernel_size)
    if dilation < 1:
        raise ValueError('elsa_attention: dilation must be >= 1, got %d' % dilation)
    if stride < 1:
        raise ValueError('elsa_attention: stride must be >= 1, got %d' % stride)
    for name, value in (('kernel_size', kernel_size), ('dilation', dilation),
                        ('stride', stride)):
        if value > MAX_HYPER:  # the kernels' index arithmetic and zero padding stay bounded
            raise ValueError('elsa_attention: %s must be <= %d, got %d' % (name, MAX_HYPER,
                                                                          value))


def autocast_enabled(device_type):
    """``torch.is_autocast_enabled`` for any device; it raises for types without autocast
    (``meta`` in a shape-only trace), which are never under autocast."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return False


def _checks_of_the_traced_example(check):
    """While the TorchScript tracer records (the legacy ONNX exporter), sizes are tensors and
    each comparison warns that its result will be fixed in the graph. A check's comparisons are
    about the example being traced and put nothing into the graph, so its warnings are
    silenced (the exporter printed 50 of them for a small ELSA-Swin)."""

    @functools.wraps(check)
    def checked(*args, **kwargs):
        if not torch.jit.is_tracing():
            return check(*args, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            return check(*args, **kwargs)

    return checked


@_checks_of_the_traced_example
def validate(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride,
              attn_is_logits=False):
    """Raise TypeError / ValueError naming the faulty argument; returns nothing."""
    check_hyperparameters(kernel_size, dilation, stride)
    if not isinstance(attn_is_logits, bool):
        raise TypeError('elsa_attention: attn_is_logits must be a bool, got %r' %
                        (attn_is_logits, ))
    for name, t in (('x', x), ('attn', attn)):
        if not isinstance(t, Tensor):
            raise TypeError('elsa_attention: %s must be a torch.Tensor, got %s' %
                            (name, type(t).__name__))
    for name, t in (('ghost_mul', ghost_mul), ('ghost_add', ghost_add)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError('elsa_attention: %s must be a torch.Tensor or None, got %s' %
                            (name, type(t).__name__))
    if x.dim() != 4:
        raise ValueError('elsa_attention: x must be a 4-D tensor (B, C, H, W), got shape %s' %
                         (tuple(x.shape), ))
    if not x.is_floating_point():
        raise TypeError('elsa_attention: x must be a floating-point tensor, got dtype %s' %
                        x.dtype)
    if attn.dim() != 5:
        raise ValueError('elsa_attention: attn must be a 5-D tensor (B, G, K*K, Ho, Wo), got '
                         'shape %s' % (tuple(attn.shape), ))
    B, C, H, W = x.shape
    G = attn.shape[1]
    K = kernel_size
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    if G < 1 or C % G != 0:
        raise ValueError('elsa_attention: the channels of x (C = %d) must be divisible by the '
                         'heads of attn (G = attn.shape[1] = %d)' % (C, G))
    expected = (B, G, K * K, Ho, Wo)
    if tuple(attn.shape) != expected:
        raise ValueError(
            'elsa_attention: attn must have shape (B, G, K*K, Ho, Wo) = %s for x of shape %s, '
            'kernel_size %d and stride %d, got %s' % (expected, tuple(x.shape), K, stride,
                                                    tuple(attn.shape)))
    tensors = [('attn', attn)]
    for name, t in (('ghost_mul', ghost_mul), ('ghost_add', ghost_add)):
        if t is None:
            continue
        if tuple(t.shape) not in ((C, K, K), (B, C, K, K)):
            raise ValueError('elsa_attention: %s must have shape (C, K, K) = %s (shared by the '
                             'batch) or (B, C, K, K) = %s (one per sample), got %s' %
                             (name, (C, K, K), (B, C, K, K), tuple(t.shape)))
        tensors.append((name, t))
    # Under autocast the C++ autocast kernel casts all floating inputs to one dtype, so mixed
    # dtypes (fp32 parameters with bf16 activations) are expected there.
    autocast = autocast_enabled(x.device.type)
    for name, t in tensors:
        if t.device != x.device:
            raise ValueError('elsa_attention: %s is on %s but x is on %s; all tensors must be on '
                             'one device' % (name, t.device, x.device))
        if t.dtype != x.dtype and not (autocast and t.is_floating_point()):
            raise TypeError('elsa_attention: %s has dtype %s but x has dtype %s; all tensors '
                            'must share one dtype' % (name, t.dtype, x.dtype))




#: the ways DDF combines its two filters (``combine`` of :func:`mmelsa.ops.ddf`)
DDF_COMBINE = ('mul', 'add')


@_checks_of_the_traced_example
def validate_ddf(x, channel_filter, spatial_filter, kernel_size, dilation, stride, combine):
    """Raise TypeError / ValueError naming the faulty argument of :func:`mmelsa.ops.ddf`;
    returns the number of heads G."""
    check_hyperparameters(kernel_size, dilation, stride)
    if combine not in DDF_COMBINE:
        raise ValueError("ddf: combine must be 'mul' or 'add', got %r" % (combine, ))
    for name, t in (('x', x), ('channel_filter', channel_filter),
                    ('spatial_filter', spatial_filter)):
        if not isinstance(t, Tensor):
            raise TypeError('ddf: %s must be a torch.Tensor, got %s' % (name, type(t).__name__))
        if t.dim() != 4:
            raise ValueError('ddf: %s must be a 4-D tensor, got shape %s' %
                             (name, tuple(t.shape)))
    B, C, H, W = x.shape
    K = kernel_size
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    if tuple(channel_filter.shape) != (B, C, K, K):
        raise ValueError('ddf: channel_filter must have shape (B, C, K, K) = %s for x of shape '
                         '%s and kernel_size %d, got %s' % ((B, C, K, K), tuple(x.shape), K,
                                                            tuple(channel_filter.shape)))
    taps = spatial_filter.shape[1]
    G = taps // (K * K)
    if (spatial_filter.shape[0] != B or taps % (K * K) or G < 1 or C % G
            or tuple(spatial_filter.shape[2:]) != (Ho, Wo)):
        raise ValueError(
            'ddf: spatial_filter must have shape (B, G*K*K, Ho, Wo) = (%d, G*%d, %d, %d) with G '
            'heads dividing the %d channels (x of shape %s, kernel_size %d, stride %d), got %s'
            % (B, K * K, Ho, Wo, C, tuple(x.shape), K, stride, tuple(spatial_filter.shape)))
    return G
