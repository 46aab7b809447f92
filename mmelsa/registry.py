"""Registers the ELSA backbone where every OpenMMLab toolbox finds it: mmengine's root ``MODELS``.

mmdet and mmseg build backbones from their own child registries (``mmdet.registry.MODELS``,
``mmseg.registry.MODELS``), and a child registry that does not hold a type looks it up in its
parent, the root. So one registration serves ``type='ELSASwinTransformer'`` in mmdet, mmseg and
any other toolbox, as mmcv's ops do, and mmelsa imports neither mmdet nor mmseg: either (or both)
may be absent.
"""
from mmengine.registry import MODELS

from .models import ELSASwinTransformer

#: classes registered as backbones, under their class names
BACKBONES = (ELSASwinTransformer, )


def register_all():
    """Register :data:`BACKBONES` into mmengine's root ``MODELS`` (idempotent)."""
    for cls in BACKBONES:
        # force=True: re-importing mmelsa (e.g. after a reload) must not raise KeyError.
        MODELS.register_module(module=cls, force=True)
    return [cls.__name__ for cls in BACKBONES]


register_all()

__all__ = ['register_all', 'BACKBONES']
