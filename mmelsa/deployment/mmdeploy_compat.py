"""What MMDeploy 1.3.1 needs to run on today's torch, in one place, applied only while it runs.

MMDeploy (OpenMMLab's deployment toolbox, whose rewriters turn a whole mmdet / mmseg model,
post-processing included, into a graph) was written for torch 1.x / 2.0. On torch >= 2.9 two
things it relies on are gone:

* ``torch.onnx.export`` now defaults to the dynamo exporter, which MMDeploy's rewriters (they
  patch functions and TorchScript symbolics) do not support; MMDeploy calls it without
  ``dynamo=``. :func:`mmdeploy_compat` makes ``dynamo=False`` the default for its calls.
* its RoIAlign symbolic (``mmdeploy/mmcv/ops/roi_align.py``) imports ``_cast_Long`` from
  ``torch.onnx.symbolic_opset9``, removed there. :func:`mmdeploy_compat` provides it (an ONNX
  Cast to int64, what it was) for as long as the context lasts.

A third limit is not patched but checked (:func:`check_static_segmenter_size`): MMDeploy
rewrites adaptive average pooling (UPerNet's pyramid pooling) as a fixed-kernel pooling, which
is only exact when the last feature map divides by every pooling scale, so a segmenter with a
pyramid pooling module exports at a static size whose last map (H / 32, W / 32 for ELSA-Swin)
is a multiple of each scale (1, 2, 3, 6: H and W multiples of 192).

Nothing here runs at import, and the patches are undone on leaving the context. The versions
they were checked against are :data:`TESTED_MMDEPLOY`; another version is refused with a clear
message rather than patched blindly.
"""
import contextlib
import functools

import torch

__all__ = ['TESTED_MMDEPLOY', 'mmdeploy_compat', 'check_static_segmenter_size']

#: the MMDeploy versions whose torch-side obstacles this module knows
TESTED_MMDEPLOY = ('1.3.1', )


def _cast_long(g, input, non_blocking):
    """The removed ``torch.onnx.symbolic_opset9._cast_Long``: Cast(to=INT64)."""
    return g.op('Cast', input, to_i=7)  # onnx.TensorProto.INT64


def _check_version():
    try:
        import mmdeploy
    except ImportError as err:
        raise RuntimeError('MMDeploy is not installed (pip install mmdeploy==%s --no-deps; see '
                           'tools/setup_env.sh)' % TESTED_MMDEPLOY[-1]) from err
    if mmdeploy.__version__ not in TESTED_MMDEPLOY:
        raise RuntimeError(
            'mmelsa.deployment.mmdeploy_compat knows MMDeploy %s, found %s: check whether it '
            'still calls torch.onnx.export without dynamo=False and imports _cast_Long from '
            'torch.onnx.symbolic_opset9, then update TESTED_MMDEPLOY' %
            (' / '.join(TESTED_MMDEPLOY), mmdeploy.__version__))
    return mmdeploy.__version__


@contextlib.contextmanager
def mmdeploy_compat():
    """Context in which MMDeploy's ``torch2onnx`` works on today's torch (see module doc)."""
    _check_version()
    import torch.onnx.symbolic_opset9 as opset9
    original_export = torch.onnx.export
    added_cast = not hasattr(opset9, '_cast_Long')

    @functools.wraps(original_export)
    def export(*args, **kwargs):
        kwargs.setdefault('dynamo', False)  # MMDeploy's rewriters need the TorchScript one
        return original_export(*args, **kwargs)

    torch.onnx.export = export
    if added_cast:
        opset9._cast_Long = _cast_long
    try:
        yield
    finally:
        torch.onnx.export = original_export
        if added_cast:
            del opset9._cast_Long


def check_static_segmenter_size(model_cfg, shape, stride=32):
    """Raise ValueError unless ``shape`` = (H, W) suits MMDeploy's rewrite of the adaptive
    pooling of the config's decode head (``pool_scales``): H / stride and W / stride must be
    whole and multiples of every pooling scale."""
    head = (model_cfg.get('model', {}) or {}).get('decode_head', {}) or {}
    scales = tuple(head.get('pool_scales', ()) or ())
    if not scales:
        return
    for name, size in zip(('height', 'width'), shape):
        last = size // stride
        if size % stride or any(last % s for s in scales):
            import math
            step = stride * functools.reduce(lambda a, b: a * b // math.gcd(a, b), scales)
            raise ValueError(
                f'MMDeploy export of this segmenter: input {name} {size} must be a multiple of '
                f'{step} (its last feature map, {name} / {stride}, must divide by every '
                f'pooling scale {scales} of the decode head)')
