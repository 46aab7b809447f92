"""Everything the pinned OpenMMLab stack needs to run safely on today's PyTorch, in one place.

``apply()`` (called by ``import mmelsa``, idempotent) installs into mmengine:

* the safe checkpoint loader (:mod:`mmelsa.engine.checkpoint_loader`): mmengine 0.10.7 calls
  ``torch.load(path)``, which since torch 2.6 means ``weights_only=True`` and refuses mmengine's
  own checkpoints (their message hub holds numpy objects). mmelsa's loader allows exactly those,
  falls back to nothing, and refuses anything else with a message naming the opt-in;
* the kill-safe checkpoint saving (:mod:`mmelsa.engine.checkpoint_saver`): atomic files, old
  checkpoints removed only after the new one is complete, resume from the newest intact one;
* the checkpoint-fit check for every OpenMMLab Inferencer (:mod:`mmelsa.engine.inferencers`):
  ``DetInferencer(model, weights)`` loads weights non-strictly, so another model's checkpoint
  would predict with partly random weights;
* a safe YAML loader for mmengine's ``.yaml`` / ``.yml`` files (configs, annotations): mmengine
  0.10.7 reads them with PyYAML's full ``Loader``, which builds any Python object a file names
  (``!!python/object/apply:os.system``). The safe loader builds plain data, plus the tuples
  (``!!python/tuple``) that mmengine's own ``Config.dump`` writes.
"""

_applied = False


def mmengine_safe_globals():
    """The non-tensor globals that mmengine 0.10.7 writes into its checkpoints."""
    from .engine.checkpoint_loader import mmengine_safe_globals as _globals
    return _globals()


def install_safe_yaml():
    """Make PyYAML's safe loader, plus ``!!python/tuple``, the default of mmengine's
    ``YamlHandler`` (and so of ``Config.fromfile`` and ``mmengine.load``)."""
    import yaml
    from mmengine.fileio.handlers import yaml_handler

    class SafeConfigYamlLoader(getattr(yaml, 'CSafeLoader', yaml.SafeLoader)):
        """PyYAML's safe loader plus the tuples that mmengine's Config.dump writes."""

    SafeConfigYamlLoader.add_constructor(
        'tag:yaml.org,2002:python/tuple',
        lambda loader, node: tuple(loader.construct_sequence(node, deep=True)))
    yaml_handler.Loader = SafeConfigYamlLoader


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
    install_safe_yaml()
    from .engine import inferencers
    inferencers.install()
    _applied = True
