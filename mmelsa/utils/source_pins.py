"""Pins on the source of third-party functions and classes mmelsa relies on.

Where mmelsa replaces, wraps, subclasses or reaches into another package's code (mmengine's
checkpoint loading, timm's VOLO), a version range alone does not say whether that code is still
what mmelsa was written against. A pin does: the digest of the object's source
(``inspect.getsource``) as read at one release, kept in a table ``{target: digest}`` beside the
code that relies on it. :func:`drift` names the targets whose installed source differs.

A target is ``'module:qualified.name'``, e.g. ``'timm.models.volo:VOLO.__init__'``.
"""
import hashlib
import importlib
import inspect

__all__ = ['resolve', 'source_digest', 'drift']


def resolve(target):
    """The object a ``'module:qualified.name'`` target names (imports the module)."""
    module_name, _, qualname = target.partition(':')
    obj = importlib.import_module(module_name)
    for part in qualname.split('.'):
        obj = getattr(obj, part)
    return obj


def source_digest(obj):
    """The first 16 hex digits of sha256 of ``obj``'s source."""
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def drift(pins, originals=None):
    """``{target: (expected, found)}`` for the targets of ``pins`` (``{target: digest}``) whose
    source differs from the pinned one. ``originals`` (``{target: object}``) gives the object to
    read where the installed one has been replaced (a wrapper's source says nothing of what it
    wraps)."""
    originals = originals or {}
    found = {}
    for target, expected in pins.items():
        digest = source_digest(originals.get(target) or resolve(target))
        if digest != expected:
            found[target] = (expected, digest)
    return found
