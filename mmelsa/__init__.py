"""mmelsa: ELSA (Enhanced Local Self-Attention) backbones and kernels for OpenMMLab 2.0.

``import mmelsa.ops`` (the operator: ``from mmelsa.ops import elsa_attention``) needs torch alone.
``import mmelsa`` (or ``custom_imports=dict(imports=['mmelsa'])`` in a config) also installs the
OpenMMLab integration where mmengine is importable (:mod:`mmelsa.integration`): mmelsa's fixes
to mmengine from their one place (:mod:`mmelsa.engine.patches`) and the ELSA backbones in
mmengine's root ``MODELS``, which mmdet's, mmseg's and mmpretrain's registries search
(:mod:`mmelsa.registry`).

Layers, each depending only on those before it: ``ops`` (the operator), ``checkpoint`` (safe
reading of checkpoint files), ``models``; then ``engine`` (what mmelsa changes in mmengine),
``deployment``, ``datasets`` and ``cli`` (what the tools share).
"""
from .version import __version__

from . import ops  # noqa: E402,I001  (torch alone)
from .integration import integrate  # noqa: E402

integrate()

__all__ = ['__version__', 'ops']
