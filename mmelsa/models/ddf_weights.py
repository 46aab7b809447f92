"""The authors' DDF-ResNet checkpoints -> mmpretrain's (docs/ddf_facts.md, section 4).

The release's model is timm's ResNet with DDFPack ``conv2`` layers; its module names are those
of :class:`mmelsa.models.ddf_resnet.DDFResNet` (mmpretrain's ResNet names them alike), so only
the classifier's place changes::

    <backbone key>   -> backbone.<backbone key>
    fc.{weight,bias} -> head.fc.{weight,bias}

A ``module.`` (DataParallel) prefix is stripped; weights under ``state_dict`` or ``model`` are
found as well as at top level.
"""
from collections import OrderedDict

from .official_weights import _strip, unwrap_state_dict

__all__ = ['is_ddf_resnet_state_dict', 'convert_ddf_resnet_state_dict']

#: a key every DDF-ResNet has (the first block's spatial branch)
_MARKER = 'layer1.0.conv2.spatial_branch.0.weight'


def is_ddf_resnet_state_dict(checkpoint):
    """Whether ``checkpoint`` holds a release-layout DDF-ResNet (no ``backbone.`` prefix)."""
    return _MARKER in {_strip(k, 'module.') for k in unwrap_state_dict(checkpoint)}


def convert_ddf_resnet_state_dict(checkpoint, backbone_only=False):
    """Release DDF-ResNet weights -> an mmpretrain ``ImageClassifier``'s, or with
    ``backbone_only`` a bare ``DDFResNet``'s (``fc`` dropped).

    Returns:
        tuple(OrderedDict, list[str]): the converted weights and the dropped keys.
    """
    state_dict = unwrap_state_dict(checkpoint)
    if not is_ddf_resnet_state_dict(state_dict):
        raise ValueError(f'not a DDF-ResNet state dict in the release layout: no {_MARKER!r} '
                         '(a file already converted has backbone.-prefixed keys)')
    out, dropped = OrderedDict(), []
    for orig, value in state_dict.items():
        key = _strip(orig, 'module.')
        if key.startswith('fc.'):
            if backbone_only:
                dropped.append(orig)
            else:
                out['head.' + key] = value
        else:
            out[key if backbone_only else 'backbone.' + key] = value
    return out, dropped
