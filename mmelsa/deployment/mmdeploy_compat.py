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

* its Cascade R-CNN rewriter asserts class-agnostic box regression in the stages before the last
  (``reg_class_agnostic``), and mmdet's 4conv1fc GIoU cascade heads, which our Cascade configs
  use, regress per class. :func:`mmdeploy_compat` registers, for ONNX Runtime and for as long as
  the context lasts, a rewriter that does what mmdet does there (``regress_by_class``: each RoI
  refined by the regression of its top-scoring class, background left out) and hands the rest
  to MMDeploy's own.

A last limit is not patched but checked (:func:`check_static_segmenter_size`): MMDeploy
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


CASCADE_PREDICT_BBOX = 'mmdet.models.roi_heads.cascade_roi_head.CascadeRoIHead.predict_bbox'


def _cascade_predict_bbox(self, x, batch_img_metas, rpn_results_list, rcnn_test_cfg,
                          rescale=False, **kwargs):
    """MMDeploy's ``CascadeRoIHead.predict_bbox`` rewriter, also for class-specific box
    regression before the last stage: there each RoI's (N, classes * 4) regression is reduced to
    the (N, 4) of its top class, which is what MMDeploy's rewriter expects of a class-agnostic
    head (mmdet's ``BBoxHead.regress_by_class``)."""
    from mmdeploy.codebase.mmdet.models.roi_heads import cascade_roi_head
    specific = [head for head in self.bbox_head[:-1] if not head.reg_class_agnostic]
    if not specific:
        return cascade_roi_head.cascade_roi_head__predict_bbox(
            self, x, batch_img_metas, rpn_results_list, rcnn_test_cfg, rescale, **kwargs)
    bbox_forward = self._bbox_forward

    def top_class_bbox_forward(stage, feats, rois, **kw):
        results = bbox_forward(stage, feats, rois, **kw)
        head = self.bbox_head[stage]
        if head in specific:
            label = results['cls_score'][:, :-1].argmax(dim=1)
            pred = results['bbox_pred'].view(label.shape[0], -1, head.bbox_coder.encode_size)
            results = dict(results, bbox_pred=pred[torch.arange(label.shape[0]), label])
        return results

    self._bbox_forward = top_class_bbox_forward
    for head in specific:
        head.reg_class_agnostic = True  # what it now is, for MMDeploy's assertion
    try:
        return cascade_roi_head.cascade_roi_head__predict_bbox(
            self, x, batch_img_metas, rpn_results_list, rcnn_test_cfg, rescale, **kwargs)
    finally:
        del self._bbox_forward
        for head in specific:
            head.reg_class_agnostic = False


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

    from mmdeploy.core import FUNCTION_REWRITER
    torch.onnx.export = export
    if added_cast:
        opset9._cast_Long = _cast_long
    # a backend-specific rewriter takes precedence over MMDeploy's default one
    FUNCTION_REWRITER.register_rewriter(CASCADE_PREDICT_BBOX,
                                        backend='onnxruntime')(_cascade_predict_bbox)
    try:
        yield
    finally:
        torch.onnx.export = original_export
        if added_cast:
            del opset9._cast_Long
        FUNCTION_REWRITER._registry.remove_record(_cascade_predict_bbox)


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
