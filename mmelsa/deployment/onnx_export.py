"""Export ELSA-Swin models to ONNX and check them in ONNX Runtime against PyTorch.

What is exported (``part``):

* ``'backbone'``: the ELSASwinTransformer alone, (B, 3, H, W) -> its feature maps;
* ``'model'``: the whole model in mmengine's tensor mode, without post-processing: for a
  segmentor ``model(x, mode='tensor')``, the decode head's logits (B, classes, H/4, W/4); for a
  detector its ``extract_feat``, backbone + neck (the FPN maps; the RPN / RoI heads with their
  data-dependent proposal counts stay in PyTorch); for an mmpretrain classifier its logits
  (B, classes), which is the whole classifier.

While exporting, the ELSA operator computes itself in standard torch ops
(:func:`mmelsa.ops.onnx.elsa_export_form`), so this is a plain ``torch.onnx.export`` (no
registration, no translation table) and the file runs in a stock ONNX Runtime. ``dynamic=True``
keeps batch, height and width symbolic.

A whole detector (RPN proposals, NMS, RoI heads) does not export this way: mmdet 3's heads
and mmcv's NMS keep ONNX branches that import mmdet 2 modules (``mmdet.core``), which MMDeploy's
rewriters replace; the whole detector goes through MMDeploy.
"""
import os
import os.path as osp
import shutil
import tempfile

import torch
from torch import nn

from ..ops.onnx import ONNX_OPSET
from ..utils import toolboxes

__all__ = ['build_from_config', 'TensorModeModel', 'min_dynamic_size', 'export_onnx',
           'load_image', 'OnnxRunner', 'StagedFile']


class StagedFile:
    """A file written under a temporary name beside ``path`` and moved onto ``path`` only when
    :meth:`publish` is called, so a failed export or comparison leaves ``path`` as it was.

    ``partial`` is a path in a new folder that :func:`tempfile.mkdtemp` makes beside ``path``
    (random name, created exclusively, only we may write in it): the exporters write it by name,
    so nothing planted in ``path``'s folder (a symlink at a name we might use) can redirect them.
    Leaving the ``with`` block removes that folder and whatever was not published.
    """

    def __init__(self, path):
        self.path = osp.abspath(path)
        folder, base = osp.split(self.path)
        os.makedirs(folder, exist_ok=True)  # e.g. work_dirs/onnx/
        self._folder = tempfile.mkdtemp(dir=folder, prefix=f'.{base}.', suffix='.partial')
        self.partial = osp.join(self._folder, base)

    def publish(self):
        """Move the file onto ``path``. rename(2) replaces the directory entry: a symlink at
        ``path`` is replaced, the file it pointed at is not written."""
        os.replace(self.partial, self.path)

    def publish_if_new(self):
        """Move the file onto ``path`` only where nothing is there (not even a symlink); True if
        it moved. A hard link, not a check then a rename: a file that appears meanwhile stays."""
        try:
            os.link(self.partial, self.path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if osp.lexists(self.path):
                return False
            os.replace(self.partial, self.path)
            return True
        os.remove(self.partial)
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self._folder, ignore_errors=True)
        return False


class TensorModeModel(nn.Module):
    """A model as one tensor-in / tensors-out callable (what the exporters trace).

    Shape: (B, 3, H, W) normalised image -> tuple of tensors (see the module docstring).
    """

    def __init__(self, model, part):
        super().__init__()
        self.model = model
        self.part = part

    def forward(self, x):
        if self.part == 'backbone':
            return tuple(self.model(x))
        if hasattr(self.model, 'decode_head') or hasattr(self.model, 'with_head'):
            # a segmentor or an mmpretrain classifier: the logits, one tensor
            return (self.model(x, mode='tensor'), )
        return tuple(self.model.extract_feat(x))  # a detector: backbone + neck


def build_from_config(cfg, checkpoint=None, part='model', allow_partial_load=False):
    """Build the config's model (eval mode, float32 CPU), load ``checkpoint`` if given, and
    wrap it for export. Returns ``(TensorModeModel, normalisation dict)``.

    A checkpoint must fit the model exactly (:func:`mmelsa.engine.check_checkpoint_fits`):
    an exported file with layers left at their random initialisation would look like a
    working model. ``allow_partial_load=True`` loads what fits and logs the rest.
    """
    model = toolboxes.build_model(cfg)
    if checkpoint:
        from mmengine.runner.checkpoint import _load_checkpoint_to_model

        from ..checkpoint import check_loaded_checkpoint_fits, read_checkpoint
        loaded = read_checkpoint(checkpoint)
        if not allow_partial_load:
            check_loaded_checkpoint_fits(model, loaded, checkpoint)
        _load_checkpoint_to_model(model, loaded)
    else:
        model.init_weights()
    model = model.eval().float()
    if part == 'backbone':
        model = model.backbone
    norm = dict(cfg.model.get('data_preprocessor', {}) or {})
    return TensorModeModel(model, part).eval(), norm


def min_dynamic_size(module):
    """Smallest H (and W) a dynamic dynamo export of ``module`` (a :class:`TensorModeModel`)
    covers: torch.export specialises a dimension of size 1, so every feature map must be at
    least 2 pixels, the backbone's last stage (stride patch * 2**(stages - 1)) and each extra
    stride-2 level a detector's neck adds on top (FPN's P6)."""
    model = module.model
    backbone = model if module.part == 'backbone' else model.backbone
    if not hasattr(backbone, 'patch_embed') or not hasattr(backbone, 'layers'):
        return 1  # not an ELSA-Swin (ELSA-VOLO: its position embedding fixes the size)
    halvings = len(backbone.layers) - 1
    neck = getattr(model, 'neck', None) if module.part != 'backbone' else None
    if neck is not None and hasattr(neck, 'num_outs') and hasattr(neck, 'in_channels'):
        halvings += max(0, neck.num_outs - len(neck.in_channels))
    return backbone.patch_embed.patch_size * 2**halvings + 1


def export_onnx(module, example, path, dynamic=True, dynamo=True, max_size=4096,
                opset_version=ONNX_OPSET):
    """Export ``module`` (one (B, 3, H, W) input) to ``path``; returns ``path``.

    The file is written beside ``path`` (:class:`StagedFile`) and renamed over it once it
    passed its checks, so ``path`` is never left half-written or holding a file that failed
    them, and nothing planted beside it is written through.

    dynamo=True uses ``torch.onnx.export(dynamo=True)``, dynamo=False the TorchScript
    exporter, both plain (any ``opset_version`` >= 11; the dynamo exporter writes opset 18
    when it cannot lower its graph to an older one). With ``dynamic``
    batch, height and width are symbolic (height and width >= :func:`min_dynamic_size` for
    the dynamo exporter).
    """
    model = module.model
    backbone = model if module.part == 'backbone' else getattr(model, 'backbone', None)
    if dynamic and getattr(backbone, 'use_abs_pos_embed', False):
        raise ValueError(
            'export_onnx: a backbone with use_abs_pos_embed=True takes one input size only (its '
            'position embedding fixes the patch grid), so it cannot be exported with a dynamic '
            'height and width; export without --dynamic')
    low = min_dynamic_size(module)
    if dynamic and dynamo and min(example.shape[-2:]) < low:
        raise ValueError(
            f'export_onnx: a dynamic export with the dynamo exporter needs an example of at '
            f'least {low} x {low} for this model (got {tuple(example.shape[-2:])}): '
            'torch.export specialises feature maps of size 1; use a larger example or '
            'dynamo=False')
    path = str(path)
    with StagedFile(path) as staged:
        _export_checked(module, example, staged.partial, dynamic, dynamo, max_size,
                        opset_version)
        staged.publish()
    return path


def _export_checked(module, example, path, dynamic, dynamo, max_size, opset_version):
    with torch.no_grad():
        outputs = module(example)
    output_names = ['out%d' % i for i in range(len(outputs))]
    if dynamo:
        dynamic_shapes = None
        if dynamic:
            if example.shape[0] == 1:  # a batch of 1 would be specialised like any size 1
                example = example.repeat(2, 1, 1, 1)
            low = min_dynamic_size(module)
            dims = torch.export.Dim
            dynamic_shapes = {'x': {0: dims('batch', min=1, max=256),
                                    2: dims('height', min=low, max=max_size),
                                    3: dims('width', min=low, max=max_size)}}
        torch.onnx.export(module, (example, ), path, dynamo=True, opset_version=opset_version,
                          input_names=['x'], output_names=output_names,
                          dynamic_shapes=dynamic_shapes, external_data=False, verbose=False)
    else:
        dynamic_axes = None
        if dynamic:
            dynamic_axes = {'x': {0: 'batch', 2: 'height', 3: 'width'}}
            dynamic_axes.update({n: {0: 'batch', 2: n + '_h', 3: n + '_w'}
                                 for n in output_names})
        torch.onnx.export(module, (example, ), path, dynamo=False,
                          opset_version=opset_version,
                          input_names=['x'], output_names=output_names,
                          dynamic_axes=dynamic_axes)
    import onnx
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    if dynamic and not _has_dynamic_height_width(proto):
        # torch.onnx falls back to a static trace when torch.export refuses dynamic sizes
        raise RuntimeError(
            'the model could not be exported with a dynamic height and width (a layer needs '
            'static sizes, e.g. the adaptive pooling of UPerNet\'s pyramid pooling module); '
            'export without --dynamic')


def _has_dynamic_height_width(proto):
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return all(dims[i].dim_param and not dims[i].HasField('dim_value') for i in (2, 3))


def load_image(path, size, norm):
    """A (1, 3, H, W) float tensor from an image file, resized to ``size`` = (H, W) and
    normalised as the config's data preprocessor does (mean, std, BGR -> RGB)."""
    import mmcv
    img = mmcv.imread(path)  # BGR, (h, w, 3)
    if img is None:
        raise FileNotFoundError('cannot read image %s' % path)
    img = mmcv.imresize(img, (size[1], size[0]))
    x = torch.from_numpy(img).float().permute(2, 0, 1)
    return normalise(x[None], norm)


def normalise(x, norm):
    """(B, 3, H, W) 0-255 BGR -> the model's input, per the data preprocessor config."""
    if norm.get('bgr_to_rgb') or norm.get('rgb_to_bgr'):
        x = x.flip(1)
    mean = torch.tensor(norm.get('mean', [0., 0., 0.])).view(1, -1, 1, 1)
    std = torch.tensor(norm.get('std', [1., 1., 1.])).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


class OnnxRunner:
    """An ONNX Runtime CPU session: ``runner(x)`` -> list of numpy arrays."""

    def __init__(self, path):
        import onnxruntime as ort
        self.session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x):
        return self.session.run(None, {self.input_name: x.numpy()})
