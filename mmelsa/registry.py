"""Registers the ELSA backbone where every OpenMMLab toolbox finds it: mmengine's root ``MODELS``.

mmdet and mmseg build backbones from their own child registries (``mmdet.registry.MODELS``,
``mmseg.registry.MODELS``), and a child registry that does not hold a type looks it up in its
parent, the root. So one registration serves ``type='ELSASwinTransformer'`` in mmdet, mmseg and
any other toolbox, as mmcv's ops do, and mmelsa imports neither mmdet nor mmseg: either (or both)
may be absent. mmpretrain's ``ImageClassifier`` finds ``type='ELSASwinTransformer'`` the same way.

``ELSAVOLO`` is built on timm's VOLO. It is registered, under that type name, as a builder
(:func:`build_elsa_volo`) that imports it when a config asks for one, so that ``import mmelsa``
works without timm (and the torchvision that timm imports) for detection and segmentation.
``DDFResNet`` (mmpretrain's ResNet with DDF layers) is registered the same way
(:func:`build_ddf_resnet`), so mmdet and mmseg configs can use it where mmpretrain is installed.
``DDFUpFPN`` (mmdet's FPN upsampling by DDF-Up) likewise (:func:`build_ddf_up_fpn`), so that
mmdet is imported only when a config builds one.

Where they can be imported, mmelsa's classifiers are also made known by name to mmpretrain
(``mmpretrain.list_models('*elsa*')``, ``get_model``, the Inferencers:
:mod:`mmelsa.models.mmpretrain_hub`) and to timm (``timm.create_model('elsa_swin_tiny')``:
:mod:`mmelsa.models.timm_entry`). An installation where either fails to import (absent, or a
torchvision built for another torch) costs one warning, never ``import mmelsa``.
"""
import importlib.util
import warnings

from mmengine.registry import MODELS

from .models import ConvStem, ELSASwinTransformer

#: classes registered as backbones, under their class names
BACKBONES = (ELSASwinTransformer, )
#: layers registered under their class names (for configs that build them by type)
LAYERS = (ConvStem, )


def _lazy_builder(module, name, needs):
    """A builder that imports ``name`` from ``module`` (relative to mmelsa) when a config asks
    for one, so that ``import mmelsa`` imports neither timm nor mmpretrain nor mmdet; a missing
    dependency is one ImportError saying what ``name`` ``needs``."""
    def build(**kwargs):
        try:
            cls = getattr(importlib.import_module(module, __package__), name)
        except ImportError as err:
            raise ImportError(f'{name} {needs}: {err}') from err
        return cls(**kwargs)

    build.__doc__ = f'Build :class:`mmelsa{module}.{name}`; registered as ``type={name!r}``.'
    return build


build_elsa_volo = _lazy_builder(
    '.models.elsa_volo', 'ELSAVOLO',
    'is built on timm\'s VOLO and needs timm (and torchvision) installed')
build_ddf_resnet = _lazy_builder(
    '.models.ddf_resnet', 'DDFResNet',
    'is built on mmpretrain\'s ResNet and needs mmpretrain installed (pip install -e .[cls])')
build_ddf_up_fpn = _lazy_builder(
    '.models.fpn_ddfup', 'DDFUpFPN', 'is built on mmdet\'s FPN and needs mmdet installed')
build_conv_stem_vit = _lazy_builder(
    '.models.conv_stem_vit', 'ConvStemVisionTransformer',
    'is built on mmpretrain\'s VisionTransformer and needs mmpretrain installed '
    '(pip install -e .[cls])')
build_conv_stem_swin = _lazy_builder(
    '.models.conv_stem_swin', 'ConvStemSwinTransformer',
    'is built on mmdet\'s (mmseg\'s, in an mmseg config) SwinTransformer and needs that toolbox '
    'installed')
for _builder, _name in ((build_elsa_volo, 'build_elsa_volo'),
                        (build_ddf_resnet, 'build_ddf_resnet'),
                        (build_ddf_up_fpn, 'build_ddf_up_fpn'),
                        (build_conv_stem_vit, 'build_conv_stem_vit'),
                        (build_conv_stem_swin, 'build_conv_stem_swin')):
    _builder.__name__ = _builder.__qualname__ = _name  # mmengine's errors name the builder

#: types registered as builders that import their class when a config asks for one
LAZY_BUILDERS = {'ELSAVOLO': build_elsa_volo, 'DDFResNet': build_ddf_resnet,
                 'DDFUpFPN': build_ddf_up_fpn, 'ConvStemVisionTransformer': build_conv_stem_vit,
                 'ConvStemSwinTransformer': build_conv_stem_swin}


def register_all():
    """Register :data:`BACKBONES`, :data:`LAYERS` and :data:`LAZY_BUILDERS` into mmengine's
    root ``MODELS`` (idempotent)."""
    for cls in BACKBONES + LAYERS:
        # force=True: re-importing mmelsa (e.g. after a reload) must not raise KeyError.
        MODELS.register_module(module=cls, force=True)
    for name, builder in LAZY_BUILDERS.items():
        MODELS.register_module(name=name, module=builder, force=True)
    return [cls.__name__ for cls in BACKBONES + LAYERS] + list(LAZY_BUILDERS)


def _optional(package, register):
    """``register()`` when ``package`` is installed; a failure is one warning."""
    if importlib.util.find_spec(package) is None:
        return []
    try:
        return register()
    except Exception as err:  # noqa: BLE001 - a broken optional stack must not break import
        msg = str(err).strip().splitlines()[0] if str(err).strip() else ''
        warnings.warn(f'mmelsa: {package} is installed but its registration failed '
                      f'({type(err).__name__}: {msg}); mmelsa\'s models are not known to '
                      f'{package} by name', stacklevel=3)
        return []


def register_toolbox_names():
    """mmelsa's classifiers by name in mmpretrain's ModelHub and in timm, where installed."""

    def mmpretrain_hub():
        from .models.mmpretrain_hub import register_mmpretrain_models
        return register_mmpretrain_models()

    def timm_entry():
        from .models.timm_entry import register_timm_models
        return register_timm_models()

    return {'mmpretrain': _optional('mmpretrain', mmpretrain_hub),
            'timm': _optional('timm', timm_entry)}


register_all()
register_toolbox_names()

__all__ = [
    'register_all', 'register_toolbox_names', 'BACKBONES', 'LAYERS', 'LAZY_BUILDERS',
    'build_elsa_volo', 'build_ddf_resnet', 'build_ddf_up_fpn', 'build_conv_stem_vit',
    'build_conv_stem_swin'
]
