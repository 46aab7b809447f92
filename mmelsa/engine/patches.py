"""Every change mmelsa makes to mmengine, installed from this one place, for one declared range of
mmengine versions.

``import mmelsa`` calls :func:`install` (idempotent), which first checks the installed mmengine
against :data:`MMENGINE_REQUIREMENT` (the same range ``setup.py`` declares) and then installs:

* the checkpoint gate for every scheme (:mod:`mmelsa.engine.loading`): mmengine 0.10.7 calls
  ``torch.load(path)``, which since torch 2.6 means ``weights_only=True`` and refuses mmengine's
  own checkpoints (their message hub holds numpy objects); mmelsa's gate reads them as plain
  data, refuses anything else from untrusted files, keeps their config text away from mmengine,
  and checks weights by value where mmengine loads them into a model;
* the kill-safe checkpoint saving (:mod:`mmelsa.engine.saving`): atomic files, old checkpoints
  removed only after the new one is complete, resume from the newest intact one;
* the checkpoint-fit check for every OpenMMLab Inferencer (:mod:`mmelsa.engine.inferencers`);
* a safe YAML loader for mmengine's ``.yaml`` / ``.yml`` files (:mod:`mmelsa.engine.safe_yaml`);
* the ELSA operator's FLOPs in mmengine's complexity analysis (:mod:`mmelsa.ops.flops`).

The changes replace, wrap or rely on the mmengine functions of :data:`UPSTREAM`, read at
:data:`VERIFIED_VERSION` and pinned by the digest of their source
(:mod:`mmelsa.utils.source_pins`). :func:`upstream_drift` names those whose source differs from
the one read there; a test asserts that it names none, so an mmengine upgrade is a visible,
tested decision: re-read each function that drifted, adapt the change, update its digest.
"""
import warnings

from ..utils.source_pins import drift, resolve

__all__ = ['MMENGINE_REQUIREMENT', 'VERIFIED_VERSION', 'UPSTREAM', 'check_mmengine_version',
           'install', 'upstream_drift']

#: the mmengine releases mmelsa supports (``setup.py`` declares the same range)
MMENGINE_REQUIREMENT = 'mmengine>=0.10.7,<0.11'
#: the release whose sources :data:`UPSTREAM` digests
VERIFIED_VERSION = '0.10.7'

#: ``module:qualified.name`` -> the first 16 hex digits of sha256(inspect.getsource) at
#: :data:`VERIFIED_VERSION`, for every mmengine function mmelsa replaces, wraps or relies on
UPSTREAM = {
    # engine/loading.py: replaced for plain paths and http(s); wrapped for every scheme (its
    # torch.load goes through the gate); the fit check wraps loading into a model, and
    # PretrainedInit is exempt from it
    'mmengine.runner.checkpoint:load_from_local': 'aa24a2a99a65f3f6',
    'mmengine.runner.checkpoint:load_from_http': 'ed82c56c8e371d63',
    'mmengine.runner.checkpoint:CheckpointLoader.load_checkpoint': '9cb0e50abe844026',
    'mmengine.runner.checkpoint:_load_checkpoint': '8cf68c1873d03aea',
    'mmengine.runner.checkpoint:_load_checkpoint_to_model': 'e97ceb7819af8c87',
    'mmengine.runner.checkpoint:load_from_openmmlab': 'c17b71970067b708',
    'mmengine.model.weight_init:PretrainedInit.__call__': 'bdbb82924053183a',
    # engine/saving.py: wrapped (atomic files, deferred removals); replaced (resume choice)
    'mmengine.runner.checkpoint:save_checkpoint': '7f60c6ca167fd4dd',
    'mmengine.runner.checkpoint:find_latest_checkpoint': '3a539bcc0eb37663',
    'mmengine.hooks.checkpoint_hook:CheckpointHook._save_checkpoint_with_step': 'cdbc1b54c7c88d95',
    'mmengine.hooks.checkpoint_hook:CheckpointHook._save_best_checkpoint': '8e1e477297ea08d7',
    # engine/runner.py: SafeRunner overrides or extends these
    'mmengine.runner.runner:Runner.load_checkpoint': 'bebf88cd7097d2f1',
    'mmengine.runner.runner:Runner.resume': '30cc2d3b4e1afabd',
    'mmengine.runner.runner:Runner.build_param_scheduler': '493dc49379c4624f',
    'mmengine.runner.runner:Runner.train': '98de231f177d0396',
    # engine/inferencers.py: wrapped; _init_model is where config text becomes a model
    'mmengine.infer.infer:BaseInferencer.__init__': '7ff58a9b163b36d6',
    'mmengine.infer.infer:BaseInferencer._init_model': 'a60060d85e023a7e',
    'mmengine.infer.infer:BaseInferencer._load_weights_to_model': '0313363d767ef948',
    # engine/safe_yaml.py: the handler reads its module's Loader
    'mmengine.fileio.handlers.yaml_handler:YamlHandler.load_from_fileobj': '86bb901a78a0355a',
    # ops/flops.py: the analyzers start from these default tables
    'mmengine.analysis.complexity_analysis:FlopAnalyzer.__init__': '5a54aea1ac374e49',
    'mmengine.analysis.complexity_analysis:ActivationAnalyzer.__init__': '9569380ec42a6ac0',
}

_originals = {}
_installed = False


def upstream_drift():
    """The :data:`UPSTREAM` targets whose source (as installed, before mmelsa changed it)
    differs from the one read at :data:`VERIFIED_VERSION`: ``{target: (expected, found)}``."""
    return drift(UPSTREAM, _originals)


def check_mmengine_version(version=None):
    """Raise ImportError, naming the version and the range, when the installed mmengine (or
    ``version``) is outside :data:`MMENGINE_REQUIREMENT`; warn when it is inside but not the
    release the patched functions were read at."""
    if version is None:
        import mmengine
        version = mmengine.__version__
    from packaging.requirements import Requirement
    from packaging.version import Version
    found = Version(version)
    if not Requirement(MMENGINE_REQUIREMENT).specifier.contains(found, prereleases=True):
        raise ImportError(
            f'mmelsa needs {MMENGINE_REQUIREMENT} (its fixes to mmengine are written for those '
            f'releases), but mmengine {version} is installed: pip install '
            f'"mmengine=={VERIFIED_VERSION}"')
    if found != Version(VERIFIED_VERSION):
        warnings.warn(
            f'mmelsa: mmengine {version} is in the supported range but its fixes were '
            f'checked against mmengine {VERIFIED_VERSION} only', stacklevel=2)


def install():
    """Check the mmengine version, then install every change of the module docstring
    (idempotent; without mmengine: nothing to do)."""
    global _installed
    if _installed:
        return
    try:
        import mmengine.runner  # noqa: F401
    except ImportError:
        return
    check_mmengine_version()
    for target in UPSTREAM:  # before anything is replaced
        _originals[target] = resolve(target)
    from ..ops.flops import register_complexity_handles
    from . import inferencers, loading, safe_yaml, saving
    loading.install()
    saving.install()
    safe_yaml.install()
    inferencers.install()
    register_complexity_handles()
    _installed = True
