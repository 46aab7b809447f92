"""Registers the ELSA backbone where every OpenMMLab toolbox finds it: mmengine's root ``MODELS``.

mmdet and mmseg build backbones from their own child registries (``mmdet.registry.MODELS``,
``mmseg.registry.MODELS``), and a child registry that does not hold a type looks it up in its
parent, the root. So one registration serves ``type='ELSASwinTransformer'`` in mmdet, mmseg and
any other toolbox, as mmcv's ops do, and mmelsa imports neither mmdet nor mmseg: either (or both)
may be absent. mmpretrain's ``ImageClassifier`` finds ``type='ELSASwinTransformer'`` the same way.

``ELSAVOLO`` is built on timm's VOLO. It is registered as a builder that imports it when a
config asks for one, so that ``import mmelsa`` works without timm (and the torchvision that timm
imports) for detection and segmentation.
"""
from mmengine.registry import MODELS

from .models import ELSASwinTransformer

#: classes registered as backbones, under their class names
BACKBONES = (ELSASwinTransformer, )


def ELSAVOLO(**kwargs):  # noqa: N802  (the registered type name)
    """Build :class:`mmelsa.models.elsa_volo.ELSAVOLO` (needs timm)."""
    try:
        from .models.elsa_volo import ELSAVOLO as cls
    except ImportError as err:
        raise ImportError(f'ELSAVOLO is built on timm\'s VOLO and needs timm (and torchvision) '
                          f'installed: {err}') from err
    return cls(**kwargs)


def register_all():
    """Register :data:`BACKBONES` into mmengine's root ``MODELS`` (idempotent)."""
    for cls in BACKBONES:
        # force=True: re-importing mmelsa (e.g. after a reload) must not raise KeyError.
        MODELS.register_module(module=cls, force=True)
    MODELS.register_module(name='ELSAVOLO', module=ELSAVOLO, force=True)
    return [cls.__name__ for cls in BACKBONES] + ['ELSAVOLO']


register_all()

__all__ = ['register_all', 'BACKBONES', 'ELSAVOLO']
