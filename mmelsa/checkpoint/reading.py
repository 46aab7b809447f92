"""The one way a checkpoint file is read, by mmelsa and, once mmelsa is imported, by mmengine.

Every path that reads a checkpoint ends in :func:`read_checkpoint_file`: the backbone's
``init_cfg=dict(type='Pretrained', ...)``, ``load_from``, ``tools/test.py CONFIG CKPT``,
``--resume``, ``tools/model_converters/elsa2mmelsa.py`` and ``mmengine.runner.load_checkpoint`` in
a user's own script (:mod:`mmelsa.engine.loading` makes it mmengine's loader for local paths and
http(s) URLs, which the ``open-mmlab://`` / ``torchvision://`` schemes resolve to).

Unpickling a file can run any code the file names, so files are read with
``torch.load(weights_only=True)`` plus an allowlist that holds exactly the non-tensor objects
mmengine 0.10.7 writes into its own checkpoints (the message hub's ``HistoryBuffer`` and numpy
arrays). There is no automatic fallback: a file that needs anything else is refused with
:class:`UnsafeCheckpointError`, which names the file, the refused global and the opt-in. The
opt-in is per file: list the files you trust in the environment variable
``MMELSA_TRUSTED_CHECKPOINTS`` (paths separated by ``os.pathsep``), or pass
``--trust-checkpoint`` to mmelsa's tools; those files alone are read with a full unpickle.

A file can also carry code as text: mmengine turns the config text it finds in a checkpoint into
objects (``Runner.resume``, Inferencers given weights alone). From untrusted files that text is
removed, whatever the scheme the file was read through (:mod:`mmelsa.checkpoint.config_text`).

This module depends on torch and mmengine's logging and message-hub classes only, so that the
models (``init_cfg``) and the engine read checkpoints the same way without depending on each
other.
"""
import importlib
import os
import os.path as osp
import pickle
import re
import warnings

import torch

TRUST_ENV = 'MMELSA_TRUSTED_CHECKPOINTS'

__all__ = [
    'CheckpointError', 'UnsafeCheckpointError', 'CorruptCheckpointError',
    'CheckpointMismatchError', 'UntrustedConfigError', 'TRUST_ENV', 'read_checkpoint_file',
    'read_checkpoint', 'trust_checkpoint', 'is_trusted', 'mmengine_safe_globals', 'cached_path',
    'download'
]


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """The file needs an unpickling step that could run code, and nobody said it is trusted."""


class CorruptCheckpointError(CheckpointError):
    """The file is empty, truncated or not a PyTorch checkpoint at all."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the model they are loaded into."""


class UntrustedConfigError(CheckpointError, ValueError):
    """Building from the config inside a checkpoint was asked of a file that is not trusted."""


def trusted_files():
    """Real paths of the files listed in ``MMELSA_TRUSTED_CHECKPOINTS``."""
    listed = os.environ.get(TRUST_ENV, '')
    return {osp.realpath(osp.expanduser(p)) for p in listed.split(os.pathsep) if p.strip()}


def is_trusted(filename):
    """Whether ``filename`` is listed in ``MMELSA_TRUSTED_CHECKPOINTS``. An http(s) URL is
    trusted when the file it is cached in is listed (:func:`cached_path`); files of other remote
    schemes (``s3://``, ``pavi://``, ...) cannot be listed and are never trusted."""
    filename = str(filename)
    if filename.startswith(('http://', 'https://')):
        filename = cached_path(filename)
    elif '://' in filename:
        return False
    return osp.realpath(osp.expanduser(filename)) in trusted_files()


def trust_checkpoint(filename):
    """Allow a full unpickle of ``filename`` in this process and the processes it starts
    (dataloader workers, distributed ranks launched from it)."""
    listed = [p for p in os.environ.get(TRUST_ENV, '').split(os.pathsep) if p.strip()]
    listed.append(osp.realpath(osp.expanduser(str(filename))))
    os.environ[TRUST_ENV] = os.pathsep.join(listed)


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
                safe.append((getattr(module, name), f'{module_name}.{name}'))
    # dtype classes (numpy.dtypes.Float64DType, ...) that np.dtype pickles reference.
    for type_code in '?bBhHiIlLqQefdgFDGSUO':
        safe.append(type(np.dtype(type_code)))
    return safe


def _first_line(err):
    """The informative line of an error: for torch's weights-only errors, what its unpickler
    said (the rest of that message is advice to load with weights_only=False)."""
    text = str(err)
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def _refused_global(err):
    """The global torch's restricted unpickler refused, e.g. ``posix.system``, or None."""
    match = re.search(r'GLOBAL (\S+) was not an allowed global', str(err))
    if match:
        return match.group(1)
    match = re.search(r'Unsupported (?:global|class)[:\s]+(?:GLOBAL )?(\S+)', str(err))
    return match.group(1).rstrip('.,') if match else None


def _unsafe_error(filename, err):
    name = _refused_global(err)
    what = (f'the global {name}' if name else
            f'an object the safe loader refuses ({_first_line(err)})')
    return UnsafeCheckpointError(
        f'refusing to load {filename}: it needs {what}, and unpickling that can run code from '
        f'the file. If you trust this file, allow it explicitly: {TRUST_ENV}={filename} (or '
        f'--trust-checkpoint {filename} with mmelsa\'s tools).')


def read_checkpoint_file(filename, map_location='cpu'):
    """Read a local checkpoint file safely (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file needs more than the allowlist and is not trusted.
        CorruptCheckpointError: the file is empty, truncated or not a checkpoint.
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename} does not exist')
    if osp.getsize(filename) == 0:
        raise CorruptCheckpointError(
            f'checkpoint file {filename} is empty (0 bytes): its save was probably interrupted')
    if is_trusted(filename):
        from mmengine.logging import print_log
        print_log(f'{filename} is listed in {TRUST_ENV}: loading it with a full unpickle',
                  logger='current')
        weights_only = False
    else:
        weights_only = True
    try:
        with torch.serialization.safe_globals(mmengine_safe_globals()):
            checkpoint = torch.load(filename, map_location=map_location,
                                    weights_only=weights_only)
    except pickle.UnpicklingError as err:
        if weights_only and 'Weights only load failed' in str(err) and _looks_refused(err):
            raise _unsafe_error(filename, err) from None
        raise _corrupt_error(filename, err) from err
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError,
            AttributeError, TypeError) as err:
        raise _corrupt_error(filename, err) from err
    if not weights_only:
        return checkpoint
    from .config_text import remove_config_text
    return remove_config_text(checkpoint, filename)


def _looks_refused(err):
    """True when torch's restricted unpickler refused something (rather than hit bad bytes)."""
    text = str(err)
    return any(s in text for s in ('Unsupported global', 'not an allowed global',
                                   'Unsupported class', 'is not allowed while loading'))


def _corrupt_error(filename, err):
    return CorruptCheckpointError(
        f'cannot read checkpoint file {filename} ({_first_line(err)}): it is truncated, '
        f'corrupt or not a PyTorch checkpoint')


def cached_path(url):
    """Where :func:`download` keeps ``url``: torch hub's checkpoint folder, by file name."""
    from urllib.parse import urlparse

    from torch.hub import get_dir
    return osp.join(get_dir(), 'checkpoints', osp.basename(urlparse(url).path))


def download(url):
    """Download ``url`` once into torch hub's checkpoint cache (rank 0 first when distributed)
    and return the local path."""
    from mmengine.dist import barrier, get_dist_info
    from mmengine.logging import print_log
    from torch.hub import download_url_to_file

    cached = cached_path(url)
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.isfile(cached):
        os.makedirs(osp.dirname(cached), exist_ok=True)
        print_log(f'Downloading {url} to {cached}', logger='current')
        download_url_to_file(url, cached, progress=False)
    if world_size > 1:
        barrier()
    return cached


def read_checkpoint(filename, map_location='cpu'):
    """A local path, an http(s) URL (cached in torch hub's folder, then read as a local file),
    or any scheme mmengine's ``CheckpointLoader`` knows."""
    filename = str(filename)
    if filename.startswith(('http://', 'https://')):
        return read_checkpoint_file(download(filename), map_location)
    if '://' not in filename:
        return read_checkpoint_file(filename, map_location)
    from mmengine.runner import CheckpointLoader
    return CheckpointLoader.load_checkpoint(filename, map_location=map_location)
