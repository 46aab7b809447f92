"""What MMDeploy 1.3.1 needs to run on today's torch, in one place, applied only while it runs.

MMDeploy (OpenMMLab's deployment toolbox, whose rewriters turn a whole mmdet / mmseg model,
post-processing included, into a graph) was written for torch 1.x / 2.0. On torch >= 2.9 two
things it relies on are gone:

* ``torch.onnx.export`` defaults to the dynamo exporter there, which MMDeploy's rewriters (they
  patch functions and TorchScript symbolics) do not support; MMDeploy calls it without
  ``dynamo=``. :func:`mmdeploy_compat` makes ``dynamo=False`` the default for its calls.
* its RoIAlign symbolic (``mmdeploy/mmcv/ops/roi_align.py``) imports ``_cast_Long`` from
  ``torch.onnx.symbolic_opset9``, removed there. :func:`mmdeploy_compat` provides it (an ONNX
  Cast to int64, as torch defined it) for as long as the context lasts.

* its Cascade R-CNN rewriter asserts class-agnostic box regression in the stages before the last
  (``reg_class_agnostic``), and mmdet's 4conv1fc GIoU cascade heads, which our Cascade configs
  use, regress per class. :func:`mmdeploy_compat` registers, for ONNX Runtime and for as long as
  the context lasts, a rewriter that does what mmdet does there (``regress_by_class``: each RoI
  refined by the regression of its top-scoring class, background left out) and hands the rest
  to MMDeploy's own.

* post-processing that is not mmdet's, registered for ONNX Runtime while converting:

  - its box head rewriter (``BBoxHead.predict_by_feat``), for class-specific regression (our
    configs), gives every class of an RoI the box of the RoI's top-scoring class; mmdet gives
    each class its own box, and the per-class NMS then keeps other detections. On a trained
    toy Mask R-CNN (60 iterations) this moved detections from the 3rd to 11th place on: boxes
    up to 114 px apart, other labels, on 4 of 4 validation images. Ours (``_bbox_predict_by_feat``)
    scores each (RoI, class) with its own box, through MMDeploy's multi-class NMS.
  - its RPN rewriter suppresses the proposals of all pyramid levels together and keeps
    zero-size ones, where mmdet's ``RPNHead`` drops boxes no larger than ``min_bbox_size``
    and suppresses each level on its own (``batched_nms`` with the level as the class). Ours
    (``_rpn_predict_by_feat``) does what mmdet does: per level top ``nms_pre``, the size
    filter, one NMS per level (each level's scores in a column of its own), ``max_per_img``
    kept by score. (On the toy model above it changed no detection; it can where proposals
    of neighbouring levels overlap.)

  With both, the exported detector's detections are mmdet's (that trained toy model: all 20 of
  each image, in order, boxes within 2e-5 px). Left as MMDeploy has it: a batch of several
  images pads each image's proposals with the others' zero rows, and fewer RPN survivors than
  ``max_per_img`` adds one zero-size proposal (box 0, 0, 0, 0, score 0).

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
        # top_class_bbox_forward gives one box per RoI: class-agnostic, as MMDeploy asserts
        head.reg_class_agnostic = True
    try:
        return cascade_roi_head.cascade_roi_head__predict_bbox(
            self, x, batch_img_metas, rpn_results_list, rcnn_test_cfg, rescale, **kwargs)
    finally:
        del self._bbox_forward
        for head in specific:
            head.reg_class_agnostic = False


RPN_PREDICT_BY_FEAT = 'mmdet.models.dense_heads.rpn_head.RPNHead.predict_by_feat'


def _call_mmdeploy_rewriter(rewriter, ctx, *args, **kwargs):
    """Call MMDeploy's own ``rewriter`` from ours (registered in its place), with the context
    (deploy config) that ``FUNCTION_REWRITER.get_context()`` looks up inside it."""
    from mmdeploy.core import FUNCTION_REWRITER
    from mmdeploy.core.rewriters.rewriter_utils import ContextCaller, get_func_qualname
    contexts = FUNCTION_REWRITER._func_contexts[get_func_qualname(rewriter)]
    caller = ContextCaller(rewriter, ctx.origin_func, ctx.cfg)
    contexts.append(caller)
    try:
        return rewriter(*args, **kwargs)
    finally:
        contexts.remove(caller)


def _rpn_predict_by_feat(self, cls_scores, bbox_preds, score_factors=None,
                         batch_img_metas=None, cfg=None, rescale=False, with_nms=True,
                         **kwargs):
    """MMDeploy's ``RPNHead.predict_by_feat`` rewriter made to do what mmdet's
    ``RPNHead._predict_by_feat_single`` / ``_bbox_post_process`` do: proposals of width or
    height <= ``min_bbox_size`` dropped (their score set to 0, which the NMS's score threshold
    of 0 removes) and NMS per pyramid level (each level's scores in a column of its own, so the
    multi-class NMS suppresses within a level only, as mmdet's ``batched_nms`` with level ids).
    Returns MMDeploy's ``(dets (B, K, 5), labels (B, K))`` with labels 0 (one class)."""
    from mmdeploy.codebase.mmdet.deploy import gather_topk
    from mmdeploy.codebase.mmdet.models.dense_heads import rpn_head
    from mmdeploy.core import FUNCTION_REWRITER
    from mmdeploy.mmcv.ops import multiclass_nms
    from mmdeploy.utils import is_dynamic_shape
    ctx = FUNCTION_REWRITER.get_context(RPN_PREDICT_BY_FEAT)
    cfg = self.test_cfg if cfg is None else cfg
    if not with_nms or rescale or cfg.nms.get('type', 'nms') != 'nms':
        return _call_mmdeploy_rewriter(  # not what our configs do: MMDeploy's
            rpn_head.rpn_head__predict_by_feat, ctx, self, cls_scores, bbox_preds,
            score_factors, batch_img_metas, cfg, rescale, with_nms, **kwargs)
    num_levels = len(cls_scores)
    mlvl_anchors = self.anchor_generator.grid_anchors(
        [score.shape[-2:] for score in cls_scores], device=cls_scores[0].device)
    batch_size = cls_scores[0].shape[0]
    nms_pre = cfg.get('nms_pre', -1)
    dim = self.bbox_coder.encode_size
    mlvl_deltas, mlvl_scores, mlvl_anchors_kept = [], [], []
    for level, (cls_score, bbox_pred, anchors) in enumerate(
            zip(cls_scores, bbox_preds, mlvl_anchors)):
        cls_score = cls_score.detach().permute(0, 2, 3, 1)
        if self.use_sigmoid_cls:
            scores = cls_score.reshape(batch_size, -1).sigmoid()
        else:
            scores = cls_score.reshape(batch_size, -1, 2).softmax(-1)[..., 0]
        scores = scores.reshape(batch_size, -1, 1)
        deltas = bbox_pred.detach().permute(0, 2, 3, 1).reshape(batch_size, -1, dim)
        if not is_dynamic_shape(ctx.cfg):
            anchors = anchors.data
        anchors = anchors.unsqueeze(0)
        if nms_pre > 0:  # MMDeploy's topk takes min(nms_pre, count), as mmdet's sort does
            _, inds = scores.squeeze(2).topk(nms_pre)
            deltas, scores = gather_topk(deltas, scores, inds=inds, batch_size=batch_size,
                                         is_batched=True)
            anchors = gather_topk(anchors, inds=inds, batch_size=batch_size,
                                  is_batched=False)
        # the level's scores in column ``level``, 0 in the others: one NMS per level
        mlvl_scores.append(torch.nn.functional.pad(scores, (level, num_levels - 1 - level)))
        mlvl_deltas.append(deltas)
        mlvl_anchors_kept.append(anchors)
    bboxes = self.bbox_coder.decode(
        torch.cat(mlvl_anchors_kept, dim=1), torch.cat(mlvl_deltas, dim=1),
        max_shape=batch_img_metas[0]['img_shape'])
    scores = torch.cat(mlvl_scores, dim=1)
    min_size = cfg.get('min_bbox_size', -1)
    if min_size >= 0:
        w, h = bboxes[..., 2] - bboxes[..., 0], bboxes[..., 3] - bboxes[..., 1]
        scores = scores * ((w > min_size) & (h > min_size)).unsqueeze(-1).to(scores.dtype)
    keep = cfg.max_per_img
    dets, labels = multiclass_nms(
        bboxes, scores, keep, nms_type='nms', iou_threshold=cfg.nms.iou_threshold,
        score_threshold=0.0, pre_top_k=-1, keep_top_k=keep)
    return dets, torch.zeros_like(labels)


BBOX_PREDICT_BY_FEAT = 'mmdet.models.roi_heads.bbox_heads.bbox_head.BBoxHead.predict_by_feat'


def _bbox_predict_by_feat(self, rois, cls_scores, bbox_preds, batch_img_metas,
                          rcnn_test_cfg=None, rescale=False):
    """MMDeploy's ``BBoxHead.predict_by_feat`` rewriter, for class-specific box regression
    made to do what mmdet's ``multiclass_nms`` does: each class's score with that class's
    box. (MMDeploy gives every class of an RoI the box of its top-scoring class, so a
    detection of another class carries a box mmdet does not give it, and the per-class NMS
    keeps other detections.) Each (RoI, class) is a row of its own, with its class's box and
    its score in its class's column (0 elsewhere, which the score threshold removes), through
    MMDeploy's multi-class NMS; ``(dets (B, K, 5), labels (B, K))`` as MMDeploy's."""
    import torch.nn.functional as F
    from mmdeploy.codebase.mmdet.deploy import get_post_processing_params
    from mmdeploy.codebase.mmdet.models.roi_heads import bbox_head
    from mmdeploy.core import FUNCTION_REWRITER
    from mmdeploy.mmcv.ops import multiclass_nms
    from mmdet.structures.bbox import get_box_tensor
    ctx = FUNCTION_REWRITER.get_context(BBOX_PREDICT_BY_FEAT)
    nms_type = rcnn_test_cfg.nms.get('type', 'nms') if rcnn_test_cfg is not None else None
    if self.reg_class_agnostic or bbox_preds is None or nms_type != 'nms' \
            or self.num_classes == 1:
        return _call_mmdeploy_rewriter(bbox_head.bbox_head__predict_by_feat, ctx, self, rois,
                                       cls_scores, bbox_preds, batch_img_metas, rcnn_test_cfg,
                                       rescale)
    assert rois.ndim == 3, 'MMDeploy exports a two-stage model with a batch dimension'
    img_shape = batch_img_metas[0]['img_shape']
    if self.custom_cls_channels:
        scores = self.loss_cls.get_activation(cls_scores)
    else:
        scores = F.softmax(cls_scores, dim=-1)
    num_classes, size = self.num_classes, self.bbox_coder.encode_size
    scores = scores[..., :num_classes]  # (B, N, C), background left out
    batch_size = scores.shape[0]
    bboxes = get_box_tensor(self.bbox_coder.decode(rois[..., 1:], bbox_preds,
                                                   max_shape=img_shape))
    bboxes = bboxes.reshape(batch_size, -1, size)  # (B, N * C, 4): RoI-major, class-minor
    eye = torch.eye(num_classes, dtype=scores.dtype, device=scores.device)
    scores = (scores.unsqueeze(-1) * eye).reshape(batch_size, -1, num_classes)
    post_params = get_post_processing_params(ctx.cfg)
    keep = rcnn_test_cfg.get('max_per_img', post_params.keep_top_k)
    return multiclass_nms(
        bboxes, scores, keep, nms_type='nms',
        iou_threshold=rcnn_test_cfg.nms.get('iou_threshold', post_params.iou_threshold),
        score_threshold=rcnn_test_cfg.get('score_thr', post_params.score_threshold),
        pre_top_k=-1, keep_top_k=keep)


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
    FUNCTION_REWRITER.register_rewriter(RPN_PREDICT_BY_FEAT,
                                        backend='onnxruntime')(_rpn_predict_by_feat)
    FUNCTION_REWRITER.register_rewriter(BBOX_PREDICT_BY_FEAT,
                                        backend='onnxruntime')(_bbox_predict_by_feat)
    try:
        yield
    finally:
        torch.onnx.export = original_export
        if added_cast:
            del opset9._cast_Long
        FUNCTION_REWRITER._registry.remove_record(_cascade_predict_bbox)
        FUNCTION_REWRITER._registry.remove_record(_rpn_predict_by_feat)
        FUNCTION_REWRITER._registry.remove_record(_bbox_predict_by_feat)


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
