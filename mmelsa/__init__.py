"""mmelsa: ELSA (Enhanced Local Self-Attention) backbones and kernels for OpenMMLab 2.0.

``import mmelsa`` (or ``custom_imports=dict(imports=['mmelsa'])`` in a config) makes the pinned
stack work on today's torch (:mod:`mmelsa.compat`), loads the native operators
(:mod:`mmelsa.ops`) and registers ``ELSASwinTransformer`` into mmdet's and mmseg's MODELS
registries, whichever of them is installed (:mod:`mmelsa.registry`).
"""
from . import compat
from .version import __version__

compat.apply()

from . import ops  # noqa: E402
from . import models  # noqa: E402
from . import registry  # noqa: E402
from .engine import hooks  # noqa: E402,F401  (ValidateBeforeTrainHook, used by configs/toy)

__all__ = ['__version__', 'ops', 'models', 'registry']
