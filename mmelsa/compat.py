"""Everything the pinned OpenMMLab stack needs to run safely on today's PyTorch, in one place.

``apply()`` (called by ``import mmelsa``, idempotent) installs into mmengine:

* the safe checkpoint loader (:mod:`mmelsa.engine.checkpoint_loader`): mmengine 0.10.7 calls
  ``torch.load(path)``, which since torch 2.6 means ``weights_only=True`` and refuses mmengine's
  own checkpoints (their message hub holds numpy objects). mmelsa's loader allows exactly those,
  falls back to nothing, and refuses anything else with a message naming the opt-in;
* the kill-safe checkpoint saving (:mod:`mmelsa.engine.checkpoint_saver`): atomic files, old
  checkpoints removed only after the new one is complete, resume from the newest intact one.
"""
_applied = False


def mmengine_safe_globals():
    """The non-tensor globals that mmengine 0.10.7 writes into its checkpoints."""
    from .engine.checkpoint_loader import mmengine_safe_globals as _globals
    return _globals()


def apply():
    """Install the loader and the saving fixes (idempotent). Without mmengine: nothing to do."""
    global _applied
    if _applied:
        return
    try:
        import mmengine.runner  # noqa: F401
    except ImportError:
        return
    from .engine import checkpoint_loader, checkpoint_saver
    checkpoint_loader.install()
    checkpoint_saver.install()
    _applied = True
