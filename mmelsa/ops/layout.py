"""Which memory layout the operator's kernels take for a given x: the rule the C++ dispatch
applies (``elsa_cpu_nhwc`` and ``elsa_cuda_nhwc`` in csrc/common/elsa_utils.h), written once
for Python (the fake kernels and the public :func:`channels_last_path`)."""

__all__ = ['channels_last_path', 'cuda_channels_last']


def _channels_inner(x):
    return x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1 and not x.is_contiguous()


def cuda_channels_last(x, kernel_size, dilation, stride):
    """The CUDA rule (``elsa_cuda_nhwc``): the configuration of the tiled kernels."""
    return _channels_inner(x) and (kernel_size, dilation, stride) == (7, 1, 1)


def channels_last_path(x, kernel_size=7, dilation=1, stride=1):
    """Whether the operator takes its channels-last path for ``x`` (mirrors ``elsa_cpu_nhwc``
    and ``elsa_cuda_nhwc`` in csrc/common/elsa_utils.h; the fake kernels rely on it, so change
    both together): x with its channels innermost (``stride(1) == 1``, C > 1) that is not
    NCHW-contiguous, such as a channels_last tensor or a channel slice of one, on the CPU
    always, on CUDA with kernel_size 7, dilation 1, stride 1. Then x is read in place, the
    output and grad_x are channels_last and grad_attn is laid out (B, Ho, Wo, G, K*K). Every
    other x takes the NCHW kernels."""
    if x.device.type == 'cpu':
        return _channels_inner(x)
    return x.device.type == 'cuda' and cuda_channels_last(x, kernel_size, dilation, stride)


