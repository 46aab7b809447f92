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
from .onnx_export import OnnxRunner, median_latency

__all__ = ['DEFAULT_DEPLOY_CONFIGS', 'convert_whole_model', 'agreement', 'end_to_end_latency']

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


#: what ``agreement`` accepts: boxes within this many pixels and equal labels over the leading
#: detections; segmenter argmax agreement at least this fraction
BOX_TOLERANCE_PX = 0.5
ARGMAX_AGREEMENT = 0.999


def agreement(scope, pytorch_model, ort_model, data, onnx_file, top=15):
    """``(lines, problems)``: how ONNX Runtime's results (of ``ort_model``, built on
    ``onnx_file``) agree with PyTorch's on ``data``, and what falls short of
    :data:`BOX_TOLERANCE_PX` / :data:`ARGMAX_AGREEMENT` (empty when nothing does).

    A detector: counts, the largest box and score difference and label equality over the
    ``top`` leading detections (in score order), and their mask IoU. A segmenter: the argmax
    agreement of the raw logits at the input size (what MMDeploy's graph returns)."""
    lines, problems = [], []
    with torch.no_grad():
        expected = pytorch_model.test_step(data)[0]
        got = ort_model.test_step(data)[0]
    if scope == 'mmdet':
        e, g = expected.pred_instances, got.pred_instances
        n = min(top, len(e), len(g))
        lines.append(f'detections: pytorch {len(e)}, onnxruntime {len(g)}; leading {n} '
                     'compared')
        if n:
            box = float((e.bboxes[:n] - g.bboxes[:n]).abs().max())
            score = float((e.scores[:n] - g.scores[:n]).abs().max())
            labels = bool(torch.equal(e.labels[:n], g.labels[:n]))
            lines.append(f'max |box diff| {box:.3e} px, max |score diff| {score:.3e}, '
                         f'labels equal: {labels}')
            if not box <= BOX_TOLERANCE_PX or not labels:  # NaN fails too
                problems.append(f'the leading {n} detections differ (boxes by {box:.3g} px, '
                                f'more than {BOX_TOLERANCE_PX} px, or labels)')
            if 'masks' in e and 'masks' in g:
                me, mg = e.masks[:n].bool(), g.masks[:n].bool()
                inter = (me & mg).flatten(1).sum(1)
                union = (me | mg).flatten(1).sum(1)
                iou = torch.where(union > 0, inter / union.clamp(min=1), 1.)
                lines.append(f'mask IoU: min {float(iou.min()):.4f}, '
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
    """Median seconds of ``test_step`` (preprocessing, model, post-processing) for both."""
    def run(model):
        with torch.no_grad():
            model.test_step(data)

    return (median_latency(lambda: run(pytorch_model), reps=reps),
            median_latency(lambda: run(ort_model), reps=reps))
