"""Convert an official ELSA checkpoint for use with mmelsa (mmdet 3.x / mmseg 1.x / mmpretrain 1.x
configs).

    python tools/model_converters/elsa2mmelsa.py SRC DST [--backbone-only]
        [--trust-checkpoint SRC] [--overwrite]

* mmdet 2.x (COCO) / mmseg 0.x (ADE20K) files: every key is kept (the neck and head names did
  not change in mmdet 3.x / mmseg 1.x) except ``module.`` prefixes and the backbone's
  ``attn_mask`` buffers; the result loads strictly into the matching mmelsa detector /
  segmentor (``load_from=DST``). ``meta`` is kept, and its ``CLASSES`` / ``PALETTE`` are also
  written as mmengine's ``meta['dataset_meta']`` (``classes`` / ``palette``).
* ImageNet-1K files: the whole classifier, for the mmpretrain configs (configs/elsa_swin_cls):
  backbone keys under ``backbone.``, the final ``norm.*`` as the backbone's last output norm
  ``backbone.norm3.*``, ``head.*`` as ``head.fc.*``, the ``attn_mask`` buffers removed
  (:func:`mmelsa.models.official_weights.convert_classifier_state_dict`); the result loads strictly
  into the ImageNet classifier, so ``tools/test.py CONFIG DST`` reports its top-1. The
  backbone's ``init_cfg=dict(type='Pretrained', checkpoint=...)`` loads either file.
  ``--backbone-only`` writes the bare backbone instead (head and final norm removed), which
  loads strictly into ``ELSASwinTransformer(out_indices=())``.

The source is read by mmelsa's safe loader (``torch.load(weights_only=True)`` and mmengine's
allowlist); a file that needs more (pickled objects in ``meta``) is refused unless you pass
``--trust-checkpoint SRC`` for a file you trust. DST is written as plain tensors and containers,
atomically, and an existing DST is replaced only with ``--overwrite``.
"""
import torch

from mmelsa.cli.conversion import converter_parser, run_conversion
from mmelsa.models.official_weights import (convert_classifier_state_dict,
                                            convert_model_state_dict,
                                            is_classification_state_dict)


def _plain_meta(meta):
    """Copy of ``meta`` reduced to what torch.load(weights_only=True) can read back."""
    if isinstance(meta, dict):
        return {str(k): _plain_meta(v) for k, v in meta.items()}
    if isinstance(meta, (list, tuple)):
        return type(meta)(_plain_meta(v) for v in meta)
    if meta is None or isinstance(meta, (str, int, float, bool, torch.Tensor)):
        return meta
    return str(meta)


def convert(checkpoint, backbone_only=False):
    """Converted checkpoint dict ``{'state_dict': ..., 'meta': ...}`` and the dropped keys.

    An ImageNet classifier becomes an mmpretrain classifier, or with ``backbone_only`` a bare
    backbone; detector / segmentor files keep their layout."""
    if is_classification_state_dict(checkpoint) and not backbone_only:
        state_dict, dropped = convert_classifier_state_dict(checkpoint)
    else:
        state_dict, dropped = convert_model_state_dict(checkpoint)
    meta = dict(checkpoint.get('meta') or {}) if isinstance(checkpoint, dict) else {}
    meta = _plain_meta(meta)
    dataset_meta = dict(meta.get('dataset_meta') or {})
    if 'CLASSES' in meta and 'classes' not in dataset_meta:
        dataset_meta['classes'] = tuple(meta['CLASSES'])
    if 'PALETTE' in meta and 'palette' not in dataset_meta:
        dataset_meta['palette'] = [tuple(c) for c in meta['PALETTE']]
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    meta['converted_by'] = 'mmelsa tools/model_converters/elsa2mmelsa.py'
    return dict(state_dict=state_dict, meta=meta), dropped


def parse_args(argv=None):
    return converter_parser(
        'Convert an official ELSA (ImageNet / mmdet 2.x / mmseg 0.x) checkpoint into one the '
        'mmelsa configs (mmpretrain / mmdet / mmseg) load strictly.',
        'for an ImageNet classifier: write the bare backbone (no head, no final norm) instead '
        'of the whole mmpretrain classifier').parse_args(argv)


def main(argv=None):
    return run_conversion(parse_args(argv), convert)


if __name__ == '__main__':
    main()
