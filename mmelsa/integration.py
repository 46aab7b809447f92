"""mmelsa's OpenMMLab integration, installed by ``import mmelsa`` where mmengine is importable.

The operator (:mod:`mmelsa.ops`) needs torch alone: a plain-PyTorch or timm user imports it with
no mmengine, or beside an mmengine release mmelsa does not support. Everything else is the
integration: mmelsa's changes to mmengine (:mod:`mmelsa.engine.patches`), the backbones in
mmengine's registries (:mod:`mmelsa.registry`), the toy configs' hook. :func:`integrate` installs
it when mmengine can be imported and is in the supported range. Outside the range it installs
nothing and registers, under mmelsa's registry names, stand-ins that raise the version error:
so the operator keeps working while any use of mmelsa through OpenMMLab (a config naming
``ELSASwinTransformer``, ``runner_type='SafeRunner'``, the toy hook) fails with that one line.
"""
__all__ = ['integrate', 'require', 'REGISTERED_NAMES']

#: what the integration registers, by mmengine root registry
REGISTERED_NAMES = {'MODELS': ('ELSASwinTransformer', 'ELSAVOLO'), 'RUNNERS': ('SafeRunner', ),
                    'HOOKS': ('ValidateBeforeTrainHook', )}
_error = None


def _refusal(err):
    """A class that raises ``err`` when built (``Cls(...)``, or ``Cls.from_cfg`` as a runner)."""

    class Unsupported:

        def __new__(cls, *args, **kwargs):
            raise ImportError(str(err))

        @classmethod
        def from_cfg(cls, cfg):
            raise ImportError(str(err))

    return Unsupported


def _register_refusals(err):
    import mmengine.registry as registries
    for registry, names in REGISTERED_NAMES.items():
        for name in names:
            getattr(registries, registry).register_module(name=name, module=_refusal(err),
                                                          force=True)


def integrate():
    """Install the integration (idempotent); see the module docstring."""
    global _error
    try:
        import mmengine.runner  # noqa: F401
    except ImportError:
        return  # the operator alone
    from .engine import patches
    try:
        patches.check_mmengine_version()
    except ImportError as err:
        _error = err
        _register_refusals(err)
        return
    patches.install()  # first: every later import reads checkpoints through the gate
    from . import registry  # noqa: F401  (the backbones, and their names in mmpretrain / timm)
    from .engine import hooks  # noqa: F401  (ValidateBeforeTrainHook, used by configs/toy)


def require():
    """Raise the version error when the integration could not be installed."""
    if _error is not None:
        raise ImportError(str(_error))
