"""Whole-model export through MMDeploy (detectors with their RPN / RoI heads and NMS,
segmenters with their decode head) to ONNX Runtime, and the two models side by side.

A plain ``torch.onnx.export`` exports ELSA-Swin and any tensor-in / tensor-out part of a model
(:mod:`.onnx_export`), but not a whole mmdet two-stage detector: its heads and mmcv's NMS keep
ONNX branches for MMDeploy's rewriters. This module runs MMDeploy's ``torch2onnx`` inside
:func:`.mmdeploy_compat.mmdeploy_compat` and builds MMDeploy's ONNX Runtime model next to the
PyTorch one, both taking the same preprocessed image.
"""
import os.path as osp

from .mmdeploy_compat import check_static_segmenter_size, mmdeploy_compat

__all__ = ['mmdeploy_convert', 'build_models']


def _load(cfg):
    from mmengine.config import Config
    return Config.fromfile(cfg) if isinstance(cfg, str) else cfg


def mmdeploy_convert(model_cfg, deploy_cfg, checkpoint, image, work_dir):
    """Convert ``model_cfg`` (+ ``checkpoint``, None for the config's initialisation) with
    ``deploy_cfg`` traced on ``image``; returns the path of the ONNX file in ``work_dir``."""
    from mmdeploy.apis import torch2onnx
    from mmdeploy.utils import get_input_shape
    model_cfg, deploy_cfg = _load(model_cfg), _load(deploy_cfg)
    shape = get_input_shape(deploy_cfg)  # (w, h) or None (dynamic)
    if shape is not None:
        check_static_segmenter_size(model_cfg, (shape[1], shape[0]))
    save_file = deploy_cfg.onnx_config.get('save_file', 'end2end.onnx')
    with mmdeploy_compat():
        torch2onnx(image, work_dir, save_file, deploy_cfg, model_cfg, checkpoint, 'cpu')
    return osp.join(work_dir, save_file)


def build_models(model_cfg, deploy_cfg, checkpoint, onnx_file):
    """``(task_processor, pytorch_model, onnxruntime_model)``: both models take
    ``task_processor.create_input(image, input_shape)[0]`` through ``test_step``."""
    from mmdeploy.apis.utils import build_task_processor
    model_cfg, deploy_cfg = _load(model_cfg), _load(deploy_cfg)
    processor = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    pytorch_model = processor.build_pytorch_model(checkpoint).eval()
    backend_model = processor.build_backend_model([onnx_file])
    return processor, pytorch_model, backend_model
