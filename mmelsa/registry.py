"""Binds the ELSA backbone into the model registries of mmdet and mmseg.

mmdet and mmseg build backbones from their own child registries (``mmdet.registry.MODELS``,
``mmseg.registry.MODELS``, scopes 'mmdet' / 'mmseg'), so the class is registered into each of
them that can be imported. Either package may be missing: mmelsa is then usable with the other
one (and as a plain PyTorch module without both).
"""
import importlib
import warnings

from .models import ELSASwinTransformer

#: classes registered as backbones, under their class names
BACKBONES = (ELSASwinTransformer, )
#: the downstream registries, in the order they are tried
DOWNSTREAM_REGISTRIES = ('mmdet.registry', 'mmseg.registry')

#: names of the registries the backbones were bound into (filled by :func:`register_all`)
REGISTERED_INTO = []


def _import_registry(module_name):
    """The ``MODELS`` registry of ``module_name`` or None when that package is not installed.
    A package that is installed but fails to import is reported, not fatal, so that a broken
    mmseg does not stop mmdet users (and vice versa)."""
    try:
        return importlib.import_module(module_name).MODELS
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name.split('.')[0]):
            return None  # the package itself is absent: nothing to bind
        warnings.warn(f'mmelsa: {module_name} could not be imported ({err!r}); '
                      f'ELSASwinTransformer is not registered there')
    except Exception as err:  # noqa: BLE001 (an incompatible install must not break the rest)
        warnings.warn(f'mmelsa: {module_name} could not be imported ({err!r}); '
                      f'ELSASwinTransformer is not registered there')
    return None


def register_all():
    """Register :data:`BACKBONES` into every importable downstream registry and into
    mmengine's root ``MODELS`` (idempotent). The root entry serves builds made while the
    default scope is 'mmengine' (e.g. after a plain mmengine Runner was created in the same
    process), where mmdet's / mmseg's registries look only in the root."""
    from mmengine.registry import MODELS as ROOT_MODELS
    for cls in BACKBONES:
        ROOT_MODELS.register_module(module=cls, force=True)
    for module_name in DOWNSTREAM_REGISTRIES:
        registry = _import_registry(module_name)
        if registry is None:
            continue
        for cls in BACKBONES:
            # force=True: re-importing mmelsa (e.g. after a reload) must not raise KeyError.
            registry.register_module(module=cls, force=True)
        if module_name not in REGISTERED_INTO:
            REGISTERED_INTO.append(module_name)
    return list(REGISTERED_INTO)


register_all()

__all__ = ['register_all', 'BACKBONES', 'DOWNSTREAM_REGISTRIES', 'REGISTERED_INTO']
