"""Loading official ELSA checkpoints into :class:`ELSASwinTransformer`.

The official release ships three kinds of files, all with the backbone names this package uses
(ELSA-SWIN-FACTS.md):

* ImageNet-1K classification: backbone keys at top level (or under ``model``), plus the
  classifier ``head.*``, the final ``norm.*`` and per-block ``attn_mask`` buffers, which the
  detection/segmentation backbone does not have;
* COCO (mmdet 2.x) and ADE20K (mmseg 0.x): ``state_dict`` with ``backbone.``-prefixed keys next
  to the neck/head weights, and ``meta``.

The functions here turn any of them into a backbone state dict (for ``init_cfg=Pretrained``)
and are shared with ``tools/model_converters/elsa2mmelsa.py`` (for whole-model files).
"""
import logging
import os
import os.path as osp
import pickle
import warnings
from collections import OrderedDict

import torch
from mmengine.logging import print_log

# Keys the classification model has and the dense-prediction backbone does not.
_CLS_ONLY_PREFIXES = ('head.', 'norm.')
_DROPPED_SUFFIXES = ('attn_mask', )


def torch_load(filename, map_location='cpu'):
    """``torch.load`` with ``weights_only=True``; falls back to a full unpickle (with a
    warning) only for files that contain more than tensors and plain containers, e.g. mmengine
    checkpoints whose ``message_hub`` holds numpy objects. Only load files you trust."""
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        warnings.warn(
            f'{filename} cannot be loaded with torch.load(weights_only=True) ({err}). '
            f'Falling back to weights_only=False, which can run arbitrary code from the file: '
            f'only do this for checkpoints you trust.', stacklevel=2)
        return torch.load(filename, map_location=map_location, weights_only=False)


def _download(url):
    """Download ``url`` once into torch hub's checkpoint cache (rank 0 first when distributed)
    and return the local path."""
    from urllib.parse import urlparse

    from mmengine.dist import barrier, get_dist_info
    from torch.hub import download_url_to_file, get_dir

    cached = osp.join(get_dir(), 'checkpoints', osp.basename(urlparse(url).path))
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.isfile(cached):
        os.makedirs(osp.dirname(cached), exist_ok=True)
        print_log(f'Downloading {url} to {cached}', logger='current')
        download_url_to_file(url, cached, progress=False)
    if world_size > 1:
        barrier()
    return cached


def load_checkpoint_file(filename, map_location='cpu', logger='current'):
    """Load a checkpoint file with :func:`torch_load` (``weights_only=True`` first): a local
    path, or an http(s) URL downloaded to torch hub's cache. Other schemes
    (``open-mmlab://``, object storage, ...) go through mmengine's ``CheckpointLoader``."""
    filename = str(filename)
    if filename.startswith(('http://', 'https://')):
        return torch_load(_download(filename), map_location)
    local = osp.expanduser(filename)
    if osp.isfile(local):
        return torch_load(local, map_location)
    if '://' not in filename:
        raise FileNotFoundError(f'checkpoint {filename} not found')
    from mmengine.runner import CheckpointLoader
    return CheckpointLoader.load_checkpoint(filename, map_location=map_location,
                                            logger=logger)


def unwrap_state_dict(checkpoint):
    """The weights of a checkpoint: under ``state_dict``, under ``model``, or at top level."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f'a checkpoint must be a dict, got {type(checkpoint).__name__}')
    for key in ('state_dict', 'model'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            return checkpoint[key]
    return checkpoint


def _strip(key, prefix):
    return key[len(prefix):] if key.startswith(prefix) else key


def _is_dropped_backbone_key(key):
    return key.startswith(_CLS_ONLY_PREFIXES) or key.rsplit('.', 1)[-1] in _DROPPED_SUFFIXES


def convert_backbone_state_dict(state_dict):
    """Official (classification, mmdet 2.x or mmseg 0.x) weights -> backbone state dict.

    Strips a ``module.`` (DataParallel) prefix; when ``backbone.``-prefixed keys are present,
    keeps only those (the neck and heads belong to other modules) and strips the prefix; drops
    the classifier ``head.*``, the final ``norm.*`` and the ``attn_mask`` buffers.

    Returns:
        tuple(OrderedDict, list[str]): the converted weights and the dropped keys.
    """
    state_dict = unwrap_state_dict(state_dict)
    keys = [_strip(k, 'module.') for k in state_dict]
    has_backbone = any(k.startswith('backbone.') for k in keys)
    out, dropped = OrderedDict(), []
    for orig, key in zip(state_dict, keys):
        if has_backbone:
            if not key.startswith('backbone.'):
                dropped.append(orig)
                continue
            key = key[len('backbone.'):]
        if _is_dropped_backbone_key(key):
            dropped.append(orig)
            continue
        out[key] = state_dict[orig]
    return out, dropped


def convert_model_state_dict(state_dict):
    """Official whole-model weights -> weights for the mmelsa configs.

    mmdet 2.x / mmseg 0.x detector and segmentor files keep every key (the neck and head names
    did not change in mmdet 3.x / mmseg 1.x) except ``module.`` prefixes and the backbone's
    ``attn_mask`` buffers. Classification files (no ``backbone.`` keys) become a plain backbone
    state dict, as :func:`convert_backbone_state_dict` makes it.

    Returns:
        tuple(OrderedDict, list[str]): the converted weights and the dropped keys.
    """
    state_dict = unwrap_state_dict(state_dict)
    keys = [_strip(k, 'module.') for k in state_dict]
    if not any(k.startswith('backbone.') for k in keys):
        return convert_backbone_state_dict(state_dict)
    out, dropped = OrderedDict(), []
    for orig, key in zip(state_dict, keys):
        if key.startswith('backbone.') and _is_dropped_backbone_key(key[len('backbone.'):]):
            dropped.append(orig)
            continue
        out[key] = state_dict[orig]
    return out, dropped


def _resize_relative_bias(table, num_entries):
    """Bicubic resize of a (G, (2w-1)^2) relative position bias table to another window."""
    G, L = table.shape
    s1, s2 = int(round(L**0.5)), int(round(num_entries**0.5))
    grid = table.float().reshape(1, G, s1, s1)
    grid = torch.nn.functional.interpolate(grid, size=(s2, s2), mode='bicubic',
                                           align_corners=False)
    return grid.reshape(G, s2 * s2).to(table.dtype)


def load_official_weights(model, checkpoint, logger='current', strict=False):
    """Load an official checkpoint (path or already-loaded dict) into a backbone.

    Tensors whose shape does not fit are skipped and reported (a different window size gets
    its relative position bias ``rb`` resized instead, and keeps its own ``relative_id``);
    missing and unexpected keys are reported through mmengine's ``print_log``.

    Returns:
        mmengine-style ``_IncompatibleKeys`` from ``load_state_dict``.
    """
    if isinstance(checkpoint, (str, bytes)) or hasattr(checkpoint, '__fspath__'):
        source = str(checkpoint)
        checkpoint = load_checkpoint_file(source, logger=logger)
    else:
        source = 'the given state dict'
    state_dict, dropped = convert_backbone_state_dict(checkpoint)
    own = model.state_dict()
    mismatched = []
    for key in list(state_dict):
        if key not in own or state_dict[key].shape == own[key].shape:
            continue
        value = state_dict[key]
        if key.endswith('.relative_id'):
            # The index buffer follows the window size; the model's own one is right.
            del state_dict[key]
        elif key.endswith('.rb') and value.dim() == 2 and value.shape[0] == own[key].shape[0]:
            state_dict[key] = _resize_relative_bias(value, own[key].shape[1])
            print_log(f'{key}: resized relative position bias {tuple(value.shape)} -> '
                      f'{tuple(own[key].shape)}', logger=logger)
        else:
            mismatched.append(f'{key}: checkpoint {tuple(value.shape)} vs model '
                              f'{tuple(own[key].shape)}')
            del state_dict[key]
    result = model.load_state_dict(state_dict, strict=strict)
    print_log(f'Loaded {len(state_dict)} backbone tensors from {source}', logger=logger)
    if dropped:
        print_log(f'Ignored {len(dropped)} keys that are not part of the backbone '
                  f'(e.g. {dropped[:3]})', logger=logger)
    if mismatched:
        print_log('Size mismatch, not loaded: ' + '; '.join(mismatched), logger=logger,
                  level=logging.WARNING)
    if result.missing_keys:
        print_log(f'Missing keys in the checkpoint: {result.missing_keys}', logger=logger,
                  level=logging.WARNING)
    if result.unexpected_keys:
        print_log(f'Unexpected keys in the checkpoint: {result.unexpected_keys}',
                  logger=logger, level=logging.WARNING)
    return result
