"""mmengine reads every checkpoint through mmelsa's gate (:mod:`mmelsa.checkpoint.gate`), whatever
the scheme, and checks what it loads into a model.

:func:`install` (from :mod:`mmelsa.engine.patches`):

* makes :func:`read_checkpoint_file` mmengine's loader for plain paths, and a download into a
  per-URL cache followed by the same read its loader for http(s) URLs (the ``open-mmlab://`` /
  ``torchvision://`` / ``mmcls://`` model-zoo schemes call these two through module globals);
* wraps ``CheckpointLoader.load_checkpoint``, the entry of every scheme: while it runs, a
  ``torch.load`` called on the same thread (by mmengine's other loaders, ``open-mmlab://`` with a
  local mirror, ``pavi://``, ``s3://``, or a loader a user registered) reads its argument's bytes
  once and hands them to the gate, whatever ``torch.load``'s defaults or environment say;
* wraps ``_load_checkpoint_to_model``, through which ``mmengine.runner.load_checkpoint`` loads
  weights into a model (mmdet's ``init_detector``, mmseg's ``init_model``, mmpretrain's
  ``get_model`` and its Inferencers, scripts), so the weights are checked by value first
  (:mod:`mmelsa.checkpoint.fit`). ``init_cfg=dict(type='Pretrained')`` is exempt (a backbone
  takes what fits of a classifier's file by design); the Runner and mmengine's Inferencers check
  with their own options (:mod:`.runner`, :mod:`.inferencers`). The opt-in is
  ``MMELSA_ALLOW_PARTIAL_LOAD=1`` (or the config's ``allow_partial_load = True`` where a config
  is read).
"""
import contextlib
import functools
import os
import threading

import torch

from ..checkpoint.fit import check_loaded_checkpoint_fits
from ..checkpoint.reading import download, read_checkpoint_bytes, read_checkpoint_file

__all__ = ['load_from_local', 'load_from_http', 'install', 'PARTIAL_ENV', 'partial_load',
           'fit_checked_elsewhere']

PARTIAL_ENV = 'MMELSA_ALLOW_PARTIAL_LOAD'
_state = threading.local()
_swap_lock = threading.RLock()


def load_from_local(filename, map_location=None):
    """mmengine's loader for plain paths (same name, so mmengine's log line reads the same)."""
    return read_checkpoint_file(filename, map_location)


def load_from_http(filename, map_location=None, model_dir=None, progress=None):
    """mmengine's loader for http(s) URLs: download into the URL's own cache folder, then read
    it through the gate, trusted only by its exact URL or its digest."""
    return read_checkpoint_file(download(filename), map_location, url=filename)


def _gated_torch_load(original, thread):

    @functools.wraps(original)
    def load(f, map_location=None, *args, **kwargs):
        if threading.get_ident() != thread:
            return original(f, map_location, *args, **kwargs)
        # messages name what the user asked for (an s3:// name), not a temporary download
        source = getattr(_state, 'source', None)
        if isinstance(f, (str, os.PathLike)):
            return read_checkpoint_file(os.fspath(f), map_location, source=source)
        return read_checkpoint_bytes(f.read(), source or str(getattr(f, 'name', '<stream>')),
                                     map_location=map_location)

    return load


@contextlib.contextmanager
def _torch_load_through_gate():
    """``torch.load`` on this thread goes through the gate while the block runs."""
    with _swap_lock:
        original = torch.load
        torch.load = _gated_torch_load(original, threading.get_ident())
        try:
            yield
        finally:
            torch.load = original


def _through_gate(original):
    """Wrap ``CheckpointLoader.load_checkpoint(cls, filename, map_location, logger)``."""

    def load_checkpoint(cls, filename, map_location=None, logger='current'):
        _state.source = str(filename)
        with _torch_load_through_gate():
            return original(filename, map_location, logger)

    load_checkpoint.mmelsa_original = original
    return classmethod(load_checkpoint)


@contextlib.contextmanager
def _flag(name):
    setattr(_state, name, getattr(_state, name, 0) + 1)
    try:
        yield
    finally:
        setattr(_state, name, getattr(_state, name) - 1)


def fit_checked_elsewhere():
    """Context: loads into a model in this block are checked by their caller (or exempt)."""
    return _flag('exempt')


def partial_load():
    """Context: missing / unexpected keys and other shapes are allowed in this block."""
    return _flag('partial')


def partial_allowed():
    return bool(getattr(_state, 'partial', 0)) or \
        os.environ.get(PARTIAL_ENV, '').lower() in ('1', 'true', 'yes')


def _checked_load_to_model(original):
    """Wrap ``_load_checkpoint_to_model(model, checkpoint, strict, logger, revise_keys)``."""

    @functools.wraps(original)
    def _load_checkpoint_to_model(model, checkpoint, strict=False, logger=None,
                                  revise_keys=[(r'^module\.', '')]):  # noqa: B006 (mmengine's)
        if not getattr(_state, 'exempt', 0):
            from mmengine.model import is_model_wrapper
            inner = model.module if is_model_wrapper(model) else model
            check_loaded_checkpoint_fits(inner, checkpoint,
                                         getattr(_state, 'source', 'the checkpoint'),
                                         revise_keys, allow_partial=partial_allowed())
        return original(model, checkpoint, strict, logger, revise_keys)

    _load_checkpoint_to_model.mmelsa_original = original
    return _load_checkpoint_to_model


def _exempt(call):
    """Wrap ``PretrainedInit.__call__``: a backbone's pretrained file is checked by its own
    rules (mmelsa's backbones check theirs; others take what fits, as mmengine intends)."""

    @functools.wraps(call)
    def __call__(self, module):
        with fit_checked_elsewhere():
            return call(self, module)

    __call__.mmelsa_original = call
    return __call__


def install():
    """See the module docstring (idempotent)."""
    import mmengine.runner.checkpoint as mm_checkpoint
    from mmengine.model.weight_init import PretrainedInit

    loader = mm_checkpoint.CheckpointLoader
    # '' is mmengine's scheme for plain paths; force=True replaces its own loaders.
    loader.register_scheme(prefixes='', loader=load_from_local, force=True)
    loader.register_scheme(prefixes=('http://', 'https://'), loader=load_from_http, force=True)
    # The model-zoo schemes (open-mmlab://, torchvision://, ...) call these module globals.
    mm_checkpoint.load_from_http = load_from_http
    mm_checkpoint.load_from_local = load_from_local
    if not hasattr(loader.load_checkpoint, 'mmelsa_original'):
        loader.load_checkpoint = _through_gate(loader.load_checkpoint)
    if not hasattr(mm_checkpoint._load_checkpoint_to_model, 'mmelsa_original'):
        mm_checkpoint._load_checkpoint_to_model = _checked_load_to_model(
            mm_checkpoint._load_checkpoint_to_model)
    if not hasattr(PretrainedInit.__call__, 'mmelsa_original'):
        PretrainedInit.__call__ = _exempt(PretrainedInit.__call__)
