"""OpenMMLab Inferencers refuse weights that do not fit the model, as mmelsa's tools do.

``DetInferencer(model=CONFIG, weights=CKPT)`` (and ``MMSegInferencer``, and any other
``mmengine.infer.BaseInferencer``) loads ``CKPT`` non-strictly: a checkpoint of another model
only logs "do not match exactly" and the predictions come from partly random weights. Once
mmelsa is imported (``custom_imports`` in every mmelsa config), every Inferencer checks the
weights first with :func:`mmelsa.checkpoint.check_loaded_checkpoint_fits`. The opt-in, as for the
tools, is ``allow_partial_load = True`` in the config.

The check wraps each Inferencer class's own ``_load_weights_to_model`` when an instance is first
created (mmdet and mmseg override it), so classes imported before or after mmelsa are covered.

Given weights alone (``model=None``, or any empty config: ``{}``, ``Config()``), an Inferencer
builds the model from the config text inside the checkpoint, which mmengine turns into code
(:mod:`mmelsa.checkpoint.config_text`). From a file that is not trusted that text is never used:
the Inferencer refuses at once, in one line that says how to go on (pass the config, or trust
the file).
"""
import functools

__all__ = ['install']


def _checked(load_weights):
    """Wrap an Inferencer's ``_load_weights_to_model(model, checkpoint, cfg)``."""

    @functools.wraps(load_weights)
    def wrapper(self, model, checkpoint, cfg):
        from .loading import fit_checked_elsewhere, partial_allowed
        allow_partial = partial_allowed() or (
            bool(cfg.get('allow_partial_load', False)) if cfg else False)
        if checkpoint is not None:
            from ..checkpoint import check_loaded_checkpoint_fits
            source = getattr(self, '_mmelsa_weights', None) or 'the weights'
            check_loaded_checkpoint_fits(model, checkpoint, source, allow_partial=allow_partial)
        with fit_checked_elsewhere():
            return load_weights(self, model, checkpoint, cfg)

    wrapper.mmelsa_checked = True
    return wrapper


def _refuse_untrusted_config(inferencer, model, weights):
    import os.path as osp

    from ..checkpoint import TRUST_ENV, UntrustedConfigError, is_trusted
    if not is_trusted(weights):
        entry = weights if '://' in weights else osp.abspath(weights)
        raise UntrustedConfigError(
            f'{inferencer}(model={model!r}, weights={weights!r}) would build the model from the '
            f'config inside the checkpoint, and that file is not trusted (mmengine turns its '
            f'config text into code). Pass the config: {inferencer}(model=CONFIG, '
            f'weights={weights!r}), or trust the file: {TRUST_ENV}={entry}')


def install():
    """Wrap ``BaseInferencer.__init__`` so that each Inferencer class gets the check (idempotent;
    without mmengine's infer module: nothing to do)."""
    try:
        from mmengine.infer.infer import BaseInferencer
    except ImportError:
        return
    if getattr(BaseInferencer.__init__, 'mmelsa_checked', False):
        return
    original_init = BaseInferencer.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        cls = type(self)
        if not getattr(cls._load_weights_to_model, 'mmelsa_checked', False):
            cls._load_weights_to_model = _checked(cls._load_weights_to_model)
        model = kwargs.get('model', args[0] if args else None)
        weights = kwargs.get('weights', args[1] if len(args) > 1 else None)
        # mmengine builds from the checkpoint's config whenever the config is empty ('not
        # cfg'): None, {}, an empty Config all count
        if not model and weights is not None:
            _refuse_untrusted_config(cls.__name__, model, str(weights))
        self._mmelsa_weights = str(weights) if weights is not None else None
        original_init(self, *args, **kwargs)

    __init__.mmelsa_checked = True
    BaseInferencer.__init__ = __init__
