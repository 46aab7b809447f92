"""The whole model (a detector with its RPN, RoI heads and NMS; a segmenter with its decode
head) converted through MMDeploy and compared with PyTorch on one image, for
``tools/deployment/pytorch2onnx.py --part whole``.

The file is written next to ``out`` under a temporary name and moved onto ``out`` only once it
converted and ONNX Runtime ran it, so a failed conversion never replaces a file already there.
MMDeploy works in a folder made by :func:`tempfile.mkdtemp` (random name, only we may write in
it), so nothing planted beside ``out`` redirects its writes. The tool passes a
:class:`~mmelsa.deployment.onnx_export.StagedFile` as ``out`` and moves it onto ``--out`` only
after :func:`agreement` too has passed.
"""
import os
import os.path as osp
import tempfile

import torch

from .mmdeploy_export import build_models, mmdeploy_convert
from ..utils.benchmark import time_fn
from .onnx_export import OnnxRunner

__all__ = ['DEFAULT_DEPLOY_CONFIGS', 'convert_whole_model', 'match_detections', 'agreement',
           'end_to_end_latency']

# ours, in configs/mmdeploy/, by the model config's default_scope
DEFAULT_DEPLOY_CONFIGS = {
    'mmdet': 'configs/mmdeploy/instance-seg_onnxruntime_dynamic.py',
    'mmseg': 'configs/mmdeploy/segmentation_onnxruntime_static-192x192.py',
}


def _initialisation_checkpoint(model_cfg, deploy_cfg, path):
    """The config's initialisation (seed 0) saved to ``path``: the conversion and the
    comparison must see the same weights, and each build would draw its own."""
    from mmdeploy.apis.utils import build_task_processor
    torch.manual_seed(0)
    processor = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    torch.save({'state_dict': processor.build_pytorch_model(None).state_dict()}, path)
    return path


def convert_whole_model(model_cfg, deploy_cfg, checkpoint, image, out):
    """Convert with MMDeploy, traced on ``image``, into the ONNX file ``out``.

    Args:
        model_cfg, deploy_cfg (mmengine.Config): the model and MMDeploy's deploy config.
        checkpoint (str | None): weights; None for the config's initialisation (seed 0).
        image (str): image file to trace on.
        out (str): the ONNX file to write (replaced only on success).

    Returns:
        (task_processor, pytorch_model, onnxruntime_model, data): both models take ``data``
        through ``test_step``.
    """
    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix='.mmdeploy-') as work:
        if checkpoint is None:
            checkpoint = _initialisation_checkpoint(model_cfg, deploy_cfg,
                                                    osp.join(work, 'initialisation.pth'))
        onnx_file = mmdeploy_convert(model_cfg, deploy_cfg, checkpoint, image, work)
        processor, pytorch_model, ort_model = build_models(model_cfg, deploy_cfg, checkpoint,
                                                           onnx_file)
        from mmdeploy.utils import get_input_shape
        data, _ = processor.create_input(image, get_input_shape(deploy_cfg))
        with torch.no_grad():
            ort_model.test_step(data)  # it runs, before it replaces anything
        os.replace(onnx_file, out)
    # the ONNX Runtime session keeps its own copy of the graph: moving the file is safe
    return processor, pytorch_model, ort_model, data


#: what ``agreement`` accepts: a detector's detections scoring at least ``score_thr``
#: (default :data:`SCORE_THRESHOLD`) matched one to one across the two models (same label, box
#: IoU at least :data:`MATCH_IOU`, greedily in score order), each pair's boxes within
#: :data:`BOX_TOLERANCE_PX` pixels; segmenter argmax agreement at least this fraction
SCORE_THRESHOLD = 0.05
MATCH_IOU = 0.5
BOX_TOLERANCE_PX = 0.5
ARGMAX_AGREEMENT = 0.999
#: a detection just below a boundary in one model may be just above it in the other: the
#: candidates for a match are taken down to ``SCORE_MARGIN`` below the boundary. The boundaries:
#: ``score_thr``, and the lowest score the other model kept when it kept at least as many
#: detections (its ``max_per_img`` may have cut a near-tie)
SCORE_MARGIN = 0.01


def match_detections(expected, got, score_thr=SCORE_THRESHOLD, min_iou=MATCH_IOU):
    """Match ``expected``'s detections (PyTorch's ``pred_instances``) to ``got``'s (ONNX
    Runtime's), those scoring at least ``score_thr``: in ``expected``'s score order, each to
    the unmatched one of ``got`` with the same label and the largest box IoU, if at least
    ``min_iou`` (candidates down to ``SCORE_MARGIN`` below ``score_thr`` on either side).
    A detection needs a match when it scores at least ``score_thr`` and, where the other model
    kept at least as many detections, more than ``SCORE_MARGIN`` above the lowest it kept.

    Returns ``(pairs, missing, extra)``: index pairs (expected, got), the indices of
    ``expected``'s detections that need a match and have none, and of ``got``'s."""
    from mmdet.structures.bbox import bbox_overlaps

    def floor(this, other):
        if len(other) and len(other) >= len(this):
            return max(score_thr, float(other.scores.min()) + SCORE_MARGIN)
        return score_thr

    low = score_thr - SCORE_MARGIN
    e_idx = [i for i in range(len(expected)) if float(expected.scores[i]) >= low]
    g_idx = [j for j in range(len(got)) if float(got.scores[j]) >= low]
    iou = bbox_overlaps(expected.bboxes[e_idx], got.bboxes[g_idx]) if e_idx and g_idx \
        else torch.zeros(len(e_idx), len(g_idx))
    pairs, used = [], set()
    for a, i in sorted(enumerate(e_idx), key=lambda t: -float(expected.scores[t[1]])):
        best, best_iou = None, min_iou
        for b, j in enumerate(g_idx):
            if b in used or int(got.labels[j]) != int(expected.labels[i]):
                continue
            if float(iou[a, b]) >= best_iou:
                best, best_iou = b, float(iou[a, b])
        if best is not None:
            used.add(best)
            pairs.append((i, g_idx[best]))
    matched_e = {i for i, _ in pairs}
    matched_g = {j for _, j in pairs}
    floor_e, floor_g = floor(expected, got), floor(got, expected)
    missing = [i for i in e_idx if i not in matched_e and float(expected.scores[i]) >= floor_e]
    extra = [j for j in g_idx if j not in matched_g and float(got.scores[j]) >= floor_g]
    return pairs, missing, extra


def agreement(scope, pytorch_model, ort_model, data, onnx_file, score_thr=SCORE_THRESHOLD):
    """``(lines, problems)``: how ONNX Runtime's results (of ``ort_model``, built on
    ``onnx_file``) agree with PyTorch's on ``data``, and what falls short (empty when nothing
    does).

    A detector: the detections scoring at least ``score_thr`` in either model, matched one to
    one (:func:`match_detections`: same label, box IoU >= :data:`MATCH_IOU`); a problem is a
    detection without a match, or a pair whose boxes differ by more than
    :data:`BOX_TOLERANCE_PX` px; the pairs' largest score difference and mask IoU are printed.
    A segmenter: the argmax agreement of the raw logits at the input size (what MMDeploy's
    graph returns), at least :data:`ARGMAX_AGREEMENT`."""
    lines, problems = [], []
    with torch.no_grad():
        expected = pytorch_model.test_step(data)[0]
        got = ort_model.test_step(data)[0]
    if scope == 'mmdet':
        e, g = expected.pred_instances, got.pred_instances
        pairs, missing, extra = match_detections(e, g, score_thr)
        lines.append(
            f'detections: pytorch {len(e)}, onnxruntime {len(g)}; compared: those scoring >= '
            f'{score_thr:g}, matched one to one (same label, box IoU >= {MATCH_IOU:g}, in score '
            f'order): {len(pairs)} matched, {len(missing)} of pytorch\'s and {len(extra)} of '
            'onnxruntime\'s without a match (a match is not required within '
            f'{SCORE_MARGIN:g} of the threshold or of the other\'s lowest kept score)')
        if missing or extra:
            problems.append(
                f'{len(missing)} of pytorch\'s and {len(extra)} of onnxruntime\'s detections '
                f'scoring >= {score_thr:g} have no match in the other (same label, box IoU >= '
                f'{MATCH_IOU:g})')
        if pairs:
            ie = torch.tensor([i for i, _ in pairs])
            ig = torch.tensor([j for _, j in pairs])
            box = float((e.bboxes[ie] - g.bboxes[ig]).abs().max())
            score = float((e.scores[ie] - g.scores[ig]).abs().max())
            lines.append(f'matched pairs: max |box diff| {box:.3e} px, max |score diff| '
                         f'{score:.3e}')
            if not box <= BOX_TOLERANCE_PX:  # NaN fails too
                problems.append(f'matched detections differ by {box:.3g} px, more than '
                                f'{BOX_TOLERANCE_PX} px')
            if 'masks' in e and 'masks' in g:
                me, mg = e.masks[ie].bool(), g.masks[ig].bool()
                inter = (me & mg).flatten(1).sum(1)
                union = (me | mg).flatten(1).sum(1)
                iou = torch.where(union > 0, inter / union.clamp(min=1), 1.)
                lines.append(f'mask IoU of the pairs: min {float(iou.min()):.4f}, '
                             f'mean {float(iou.mean()):.4f}')
    else:
        x = pytorch_model.data_preprocessor(data, False)['inputs']
        with torch.no_grad():
            e = torch.nn.functional.interpolate(
                pytorch_model(x, mode='tensor'), size=x.shape[2:], mode='bilinear',
                align_corners=pytorch_model.decode_head.align_corners)
        g = torch.from_numpy(OnnxRunner(onnx_file)(x)[0])
        agree = float((e.argmax(1) == g.argmax(1)).float().mean())
        lines.append(f'logits {tuple(e.shape)}: argmax agreement {agree * 100:.3f}%, max '
                     f'|onnxruntime - pytorch| {float((e - g).abs().max()):.3e}')
        if not agree >= ARGMAX_AGREEMENT:
            problems.append(f'argmax agreement {agree * 100:.3f}%, below '
                            f'{ARGMAX_AGREEMENT * 100:g}%')
    return lines, problems


def end_to_end_latency(pytorch_model, ort_model, data, reps):
    """Median milliseconds of ``test_step`` (preprocessing, model, post-processing) for both,
    by the wall clock (ONNX Runtime runs on the CPU)."""
    def run(model):
        with torch.no_grad():
            model.test_step(data)

    return (time_fn(lambda: run(pytorch_model), 'cpu', reps, warmup=1),
            time_fn(lambda: run(ort_model), 'cpu', reps, warmup=1))
