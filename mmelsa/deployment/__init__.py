"""Deployment helpers: plain ONNX export of ELSA-Swin models (:mod:`.onnx_export`) and whole-model
export through MMDeploy (:mod:`.mmdeploy_export` with :mod:`.mmdeploy_compat`; the conversion and
comparison of ``pytorch2onnx.py --part whole`` in :mod:`.whole_model`; imported on use)."""
from .onnx_export import (OnnxRunner, TensorModeModel, build_from_config, export_onnx,
                          load_image, min_dynamic_size)

__all__ = ['build_from_config', 'TensorModeModel', 'min_dynamic_size', 'export_onnx',
           'load_image', 'OnnxRunner']
