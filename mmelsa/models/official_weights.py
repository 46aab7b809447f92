"""Loading official ELSA checkpoints into :class:`ELSASwinTransformer`.

The official release ships three kinds of files, all with the backbone names this package uses
(docs/elsa_facts.md, section 5):

* ImageNet-1K classification: backbone keys at top level (or under ``model``), plus the
  classifier ``head.*``, the final ``norm.*`` and per-block ``attn_mask`` buffers, which the
  detection/segmentation backbone does not have;
* COCO (mmdet 2.x) and ADE20K (mmseg 0.x): ``state_dict`` with ``backbone.``-prefixed keys next
  to the neck/head weights, and ``meta``.

The functions here turn any of them into a backbone state dict (for ``init_cfg=Pretrained``)
and are shared with ``tools/model_converters/elsa2mmelsa.py`` (for whole-model files).
"""
import logging
import re
from collections import OrderedDict

import torch
from mmengine.logging import print_log

from ..checkpoint import CheckpointMismatchError, read_checkpoint

# Keys the classification model has and the dense-prediction backbone does not.
_CLS_ONLY_PREFIXES = ('head.', 'norm.')
_DROPPED_SUFFIXES = ('attn_mask', )
# Attention weights of Swin Transformer (official and mmdet naming), which ELSA-Swin has not.
_SWIN_ATTENTION_KEY = re.compile(
    r'(\.attn\.(qkv|proj)\.(weight|bias)$|relative_position_bias_table|\.attn\.w_msa\.)')
# Model keys a file may lack without harm: the per-stage output norms (classification files
# have none; they keep their initialisation), the relative position index buffers (derived
# from the window size, not learned) and an absolute position embedding added on top of
# weights trained without one (it keeps its initialisation, as in mmdet's Swin).
_MAY_BE_MISSING = re.compile(r'^norm\d+\.|\.relative_id$|^absolute_pos_embed$')


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


def _refuse(message):
    raise CheckpointMismatchError(
        message + ' To initialise from it anyway, ask for a partial initialisation explicitly: '
        "init_cfg=dict(type='Pretrained', checkpoint=..., allow_partial=True).")


def load_official_weights(model, checkpoint, logger='current', strict=False,
                          allow_partial=False, source=None):
    """Load an official checkpoint (path or already-loaded dict) into a backbone.

    A different window size gets its relative position bias ``rb`` resized (and keeps its own
    ``relative_id``). The file must otherwise fit: a Swin Transformer (not ELSA-Swin)
    checkpoint, tensors of the wrong shape, backbone tensors the model has not (a deeper
    model), or model weights the file lacks (other than the per-stage output norms, which
    classification files do not have) raise
    :class:`CheckpointMismatchError`, unless ``allow_partial=True``, which loads what fits and
    logs the rest. The log states exactly how many tensors came from the file. ``source``
    names a dict's origin in messages.

    Returns:
        mmengine-style ``_IncompatibleKeys`` from ``load_state_dict``.
    """
    if isinstance(checkpoint, (str, bytes)) or hasattr(checkpoint, '__fspath__'):
        source = str(checkpoint)
        checkpoint = read_checkpoint(source)
    elif source is None:
        source = 'the given state dict'
    state_dict, dropped = convert_backbone_state_dict(checkpoint)
    own = model.state_dict()
    swin_keys = [k for k in state_dict if _SWIN_ATTENTION_KEY.search(k) and k not in own]
    if swin_keys and not allow_partial:
        _refuse(f'{source} is a Swin Transformer checkpoint, not an ELSA-Swin one (it has '
                f'{swin_keys[0]}): ELSASwinTransformer has no such attention weights, so only '
                'the norms, MLPs and patch embedding would load and every attention layer '
                'would stay random. Use an ELSA-Swin checkpoint (configs/elsa_swin/README.md).')
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
    loaded = [k for k in state_dict if k in own]
    lacking = [k for k in own if k not in state_dict and not _MAY_BE_MISSING.search(k)]
    extra = [k for k in state_dict if k not in own]
    if not allow_partial:
        if not loaded:
            _refuse(f'none of the {len(state_dict)} tensors of {source} fits '
                    f'{type(model).__name__} (e.g. {list(state_dict)[:3]}).')
        if mismatched:
            _refuse(f'{source} does not fit {type(model).__name__}: {len(mismatched)} tensors '
                    f'have another shape ({"; ".join(mismatched[:3])}). Another model size?')
        if lacking:
            _refuse(f'{source} lacks {len(lacking)} of the {len(own)} weights of '
                    f'{type(model).__name__} (e.g. {lacking[:3]}).')
        if 'absolute_pos_embed' in extra:
            _refuse(f'{source} has an absolute position embedding, {type(model).__name__} '
                    'has not: build it with use_abs_pos_embed=True and the pretrain_img_size '
                    'the file was trained at.')
        if extra:
            # e.g. ELSA-Swin-S weights (depths 2, 2, 18, 2) in an ELSA-Swin-T (2, 2, 6, 2):
            # every tensor of the smaller model fits, the deeper blocks would be dropped
            _refuse(f'{source} has {len(extra)} backbone tensors that '
                    f'{type(model).__name__} has not (e.g. {extra[:3]}): a deeper model '
                    '(depths)?')
    result = model.load_state_dict(state_dict, strict=strict)
    print_log(f'Loaded {len(loaded)} of the {len(own)} backbone tensors from {source}',
              logger=logger)
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


def is_classification_state_dict(state_dict):
    """Whether ``state_dict`` is an official ImageNet classifier's (backbone keys at top level
    next to a ``head.*`` classifier), as opposed to a detector's / segmentor's or a backbone's."""
    keys = [_strip(k, 'module.') for k in unwrap_state_dict(state_dict)]
    return (not any(k.startswith('backbone.') for k in keys)
            and any(k.startswith('head.') for k in keys))


def convert_classifier_state_dict(state_dict):
    """Official ImageNet classifier weights -> an mmpretrain ``ImageClassifier``'s.

    The official classifier is: last stage -> LayerNorm ``norm`` -> mean over positions ->
    Linear ``head``. In the mmpretrain model (``ELSASwinTransformer(out_indices=(L,))`` with
    ``GlobalAveragePooling`` and ``LinearClsHead``) that LayerNorm is the backbone's output norm
    of the last stage, so the key map is::

        <backbone key>   -> backbone.<backbone key>
        norm.{weight,bias} -> backbone.norm{L}.{weight,bias}   (L: the last stage's index)
        head.{weight,bias} -> head.fc.{weight,bias}
        ...attn_mask      -> dropped (a buffer derived from the input size, not learned)

    A ``module.`` (DataParallel) prefix is stripped.

    Returns:
        tuple(OrderedDict, list[str]): the converted weights and the dropped keys.
    """
    state_dict = unwrap_state_dict(state_dict)
    if not is_classification_state_dict(state_dict):
        raise ValueError('not an official ImageNet classifier state dict: it needs head.* '
                         'keys and backbone keys at top level (no backbone. prefix)')
    keys = [_strip(k, 'module.') for k in state_dict]
    stages = [int(m.group(1)) for m in map(re.compile(r'^layers\.(\d+)\.').match, keys) if m]
    if not stages:
        raise ValueError('not an ELSA-Swin classifier state dict: no layers.<i>. keys')
    last = max(stages)
    out, dropped = OrderedDict(), []
    for orig, key in zip(state_dict, keys):
        if key.rsplit('.', 1)[-1] in _DROPPED_SUFFIXES:
            dropped.append(orig)
        elif key.startswith('head.'):
            out['head.fc.' + key[len('head.'):]] = state_dict[orig]
        elif key.startswith('norm.'):
            out[f'backbone.norm{last}.' + key[len('norm.'):]] = state_dict[orig]
        else:
            out['backbone.' + key] = state_dict[orig]
    return out, dropped
