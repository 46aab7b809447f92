"""Everything the pinned OpenMMLab stack needs to run on today's PyTorch, in one place.

mmengine 0.10.7 calls ``torch.load(path)`` with no ``weights_only`` argument. Since torch 2.6
that means ``weights_only=True``, and mmengine's own checkpoints then fail to load (resume,
``tools/test.py``): they hold a ``MessageHub`` state with ``HistoryBuffer`` objects and numpy
arrays (and the buffers' statistics methods, pickled through ``getattr``), which the restricted
unpickler refuses. We replace mmengine's local-file loader with one that allows exactly those
and still loads with ``weights_only=True``. A file that
needs more than that (an old checkpoint pickled with arbitrary objects) is loaded with
``weights_only=False`` after a warning that names the file and the refused global.

``apply()`` is idempotent and is called by ``import mmelsa``.
"""
import importlib
import logging
import os.path as osp
import pickle
import warnings

import torch

_applied = False


def _history_buffer_getattr(obj, name):
    """Stands in for ``builtins.getattr`` while unpickling, and only for what mmengine needs.

    A pickled ``HistoryBuffer`` carries its statistics methods, which pickle writes as
    ``getattr(HistoryBuffer, 'mean')``. Allowing the real ``getattr`` would let a checkpoint
    reach any attribute of any allowed object, so this resolves those method names alone.
    """
    from mmengine.logging import HistoryBuffer

    allowed = {'min', 'max', 'current', 'mean'} | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed while loading an mmengine checkpoint')


def mmengine_safe_globals():
    """The non-tensor globals that mmengine 0.10.7 writes into its checkpoints."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    safe = [HistoryBuffer, np.ndarray, np.dtype, (_history_buffer_getattr, 'builtins.getattr')]
    # numpy arrays and scalars pickle through these helpers; numpy 2 moved them from numpy.core
    # to numpy._core, and a pickle names the module of the numpy that wrote it.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        for module_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for name in ('_reconstruct', 'scalar'):
                safe.append((getattr(module, name), '%s.%s' % (module_name, name)))
    # dtype classes (numpy.dtypes.Float64DType, ...) that np.dtype pickles reference.
    for type_code in '?bBhHiIlLqQefdgFDGSUO':
        safe.append(type(np.dtype(type_code)))
    return safe


def load_from_local(filename, map_location=None):
    """Drop-in for mmengine's ``load_from_local`` (same name, so its log line reads the same)."""
    from mmengine.logging import print_log

    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    with torch.serialization.safe_globals(mmengine_safe_globals()):
        try:
            return torch.load(filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            print_log(
                f'{filename} holds Python objects that torch.load(weights_only=True) refuses '
                f'({reason}); loading it with weights_only=False. Only load checkpoints you '
                'trust this way.', logger='current', level=logging.WARNING)
    return torch.load(filename, map_location=map_location, weights_only=False)


def apply():
    """Install the patches (idempotent). Without mmengine there is nothing to patch."""
    global _applied
    if _applied:
        return
    try:
        from mmengine.runner.checkpoint import CheckpointLoader
    except ImportError:
        return
    # '' is mmengine's scheme for plain local paths; force=True replaces its loader.
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    _applied = True
