"""mmelsa: ELSA (Enhanced Local Self-Attention) backbones and kernels for OpenMMLab 2.0.

``import mmelsa`` (or ``custom_imports=dict(imports=['mmelsa'])`` in a config) installs mmelsa's
fixes to mmengine from their one place (:mod:`mmelsa.engine.patches`), loads the native
operators (:mod:`mmelsa.ops`) and registers the ELSA backbones into mmengine's root ``MODELS``,
which mmdet's and mmseg's registries search (:mod:`mmelsa.registry`).

Layers, each depending only on those before it: ``ops`` (the operator), ``checkpoint`` (safe
reading of checkpoint files), ``models``; then ``engine`` (what mmelsa changes in mmengine),
``deployment``, ``datasets`` and ``cli`` (what the tools share).
"""
from .version import __version__

from .engine import patches  # noqa: E402,I001  (first: every later import reads safely)

patches.install()

from . import ops  # noqa: E402
from . import models  # noqa: E402
from . import registry  # noqa: E402
from .engine import hooks  # noqa: E402,F401  (ValidateBeforeTrainHook, used by configs/toy)

__all__ = ['__version__', 'ops', 'models', 'registry']
