"""Checkpoint saving that a kill cannot turn into lost work, for every mmengine Runner.

mmengine 0.10.7 writes a checkpoint straight into its final name, writes ``last_checkpoint``
in place, and with ``max_keep_ckpts`` deletes the oldest checkpoint *before* writing the new one.
A SIGKILL at the wrong moment (an OOM killer, a pre-empted job, a Ctrl-C escalated to kill)
therefore leaves a truncated ``epoch_N.pth``, an empty ``last_checkpoint`` that makes
``--resume`` fail although intact checkpoints exist, or no checkpoint at all.

:func:`install` (called by ``import mmelsa``) changes three things, so that any Runner in a
process that imported mmelsa saves safely, whichever tool started it:

* local checkpoint files and ``last_checkpoint`` are written atomically: into a temporary file
  in the same folder, flushed and fsynced, then renamed over the final name (:func:`atomic_write`).
  The temporary file has a random name and is created exclusively (``O_EXCL | O_NOFOLLOW``), so
  a file or symlink planted in the folder is never opened, let alone written through; the
  rename replaces a symlink at the final name rather than writing to its target;
* ``CheckpointHook`` removes an expired checkpoint (``max_keep_ckpts``, an older best
  checkpoint) only after the new checkpoint and ``last_checkpoint`` are complete;
* resuming from ``last_checkpoint`` (bare ``--resume``) checks the file it points at and, when
  that is missing or damaged, warns and takes the newest intact checkpoint of the folder
  (:func:`find_latest_intact_checkpoint`).
"""
import builtins
import contextlib
import errno
import functools
import io
import logging
import os
import os.path as osp
import re
import secrets
import string
import zipfile

import torch

#: suffix of the temporary files that :func:`atomic_write` renames into place
PARTIAL_SUFFIX = '.mmelsa-partial'
#: the file names mmengine's CheckpointHook saves under without a ``filename_tmpl``
DEFAULT_FILENAME_TMPLS = ('epoch_{}.pth', 'iter_{}.pth')
#: not on every platform; where it is missing O_EXCL alone refuses a planted symlink
_O_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
#: temporary files of this process that a failed save could not remove: path -> pid. Only
#: these are cleaned up later; any other partial file may be another run's save in progress.
_LEFT_BEHIND = {}

__all__ = ['atomic_write', 'checkpoint_problem', 'find_latest_intact_checkpoint',
           'existing_checkpoints', 'DEFAULT_FILENAME_TMPLS', 'install']


def _fsync_folder(folder):
    """Make a rename durable: fsync the folder entry (POSIX; a no-op where it is refused)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exclusive_opener(path, flags):
    """``open``'s opener for a new temporary file: O_CREAT | O_EXCL fails on any existing entry,
    a symlink included, and O_NOFOLLOW says so twice. 0o666 leaves the permissions to the umask,
    as for a file mmengine writes itself (mkstemp's 0o600 would hide checkpoints from a group)."""
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o666)


def _open_partial(path):
    """``(name, binary file)``: a new temporary file beside ``path``, under a random name that
    nobody can plant a file or symlink at in advance (a taken name is skipped, never opened)."""
    folder, base = osp.split(path)
    for _ in range(100):
        partial = osp.join(folder, f'.{base}.{secrets.token_hex(8)}{PARTIAL_SUFFIX}')
        try:
            # builtins.open rather than os.fdopen: tests count the writes of files opened so
            return partial, open(partial, 'xb', opener=_exclusive_opener)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, 'no free temporary file name beside', path)


def _discard(partial):
    """Remove our temporary file; one that cannot be removed now is remembered as ours, for
    :func:`_remove_stale_partials` to retry."""
    try:
        os.remove(partial)
    except FileNotFoundError:
        pass
    except OSError:
        _LEFT_BEHIND[partial] = os.getpid()


def atomic_write(path, write):
    """Create or replace ``path`` so that it is either the old file or the complete new one.

    ``write(f)`` writes the content into a binary file object; it goes to a new temporary file
    beside ``path`` (:func:`_open_partial`) that is flushed, fsynced and then renamed over
    ``path``. The rename replaces the directory entry: a symlink at ``path`` is replaced, and
    the file it pointed at is left as it was.
    """
    path = osp.abspath(path)
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    partial, f = _open_partial(path)
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        _discard(partial)
        raise
    _fsync_folder(folder)


def _remove_stale_partials(folder):
    """Retry removing the temporary files in ``folder`` that this process's failed saves left.
    Only those: another partial file may belong to a run saving into the same folder right now
    (or be planted), and is not ours to delete."""
    pid = os.getpid()
    for partial, owner in list(_LEFT_BEHIND.items()):
        if owner != pid or osp.dirname(partial) != folder:
            continue  # a forked child inherits the record of its parent's files
        try:
            os.remove(partial)
        except FileNotFoundError:
            pass
        except OSError:
            continue
        del _LEFT_BEHIND[partial]


def checkpoint_problem(path):
    """None when ``path`` is a complete checkpoint file, else what is wrong with it.

    A file written by ``torch.save`` is a zip archive: a truncated one has no central
    directory, and a damaged one fails the members' CRC check. Nothing is unpickled.
    """
    if not osp.isfile(path):
        return 'missing'
    if osp.getsize(path) == 0:
        return 'empty'
    if not zipfile.is_zipfile(path):
        return 'truncated or not a torch.save zip file'
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f'unreadable ({err})'
    if bad is not None:
        return f'corrupt member {bad}'
    if not any(n.endswith('/data.pkl') or n == 'data.pkl' for n in names):
        return 'no data.pkl in the archive'
    return None


@functools.lru_cache(maxsize=None)
def _template_regex(filename_tmpl):
    """The names a CheckpointHook ``filename_tmpl`` gives: ``'ckpt_{}.pth'`` matches
    ``ckpt_12.pth``. mmengine formats the epoch or iteration into each replacement field, so
    each is a number; the rest of the template is literal text."""
    try:
        pieces = list(string.Formatter().parse(filename_tmpl))
    except ValueError:  # not a valid template: mmengine would fail to format it; match it as is
        pieces = [(filename_tmpl, None, None, None)]
    regex = ''.join(re.escape(literal) + (r'(\d+)' if field is not None else '')
                    for literal, field, _, _ in pieces)
    return re.compile(f'^{regex}$')


def _step_of(path, filename_tmpls=DEFAULT_FILENAME_TMPLS):
    """The epoch or iteration in a checkpoint's name (0 for a template without a field), or -1
    when no template gives the name."""
    name = osp.basename(path)
    for tmpl in filename_tmpls:
        match = _template_regex(osp.basename(tmpl)).match(name)
        if match:
            return int(match.group(1)) if match.groups() else 0
    return -1


def existing_checkpoints(folder, filename_tmpls=DEFAULT_FILENAME_TMPLS):
    """The files in ``folder`` named as a CheckpointHook with one of ``filename_tmpls`` names its
    checkpoints (default: mmengine's ``epoch_{}.pth`` / ``iter_{}.pth``), newest (highest step)
    first. A template with a folder (``'ckpts/epoch_{}.pth'``) is looked for in that folder."""
    found = set()
    for tmpl in filename_tmpls:
        sub = osp.join(folder, osp.dirname(tmpl))
        names = os.listdir(sub) if osp.isdir(sub) else []
        found.update(osp.join(sub, n) for n in names if _step_of(n, (tmpl, )) >= 0)
    return sorted(found, key=lambda p: (_step_of(p, filename_tmpls), p), reverse=True)


def _log(msg, level=logging.INFO):
    from mmengine.logging import print_log
    print_log(msg, logger='current', level=level)


def find_latest_intact_checkpoint(work_dir):
    """The checkpoint to resume from: the newest intact ``epoch_*.pth`` / ``iter_*.pth`` of the
    work dir (and of the folder ``last_checkpoint`` points into), or the file
    ``last_checkpoint`` names when it is intact and no numbered checkpoint is newer; else None.

    A kill between writing a checkpoint and updating ``last_checkpoint`` leaves the pointer one
    save behind, so the pointer alone is not trusted to name the newest checkpoint; but a
    numbered checkpoint older than the pointer file is left from an earlier run and ignored.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
    if named and '://' in named:
        return named  # remote storage: nothing to check locally
    folders = {work_dir} | ({osp.dirname(named)} if named else set())
    numbered = {p for folder in folders for p in existing_checkpoints(folder)}
    if named:
        # A checkpoint past the pointer's is one whose pointer update a kill prevented, so it
        # was written after the pointer. One written before is left from an earlier run in
        # this folder (trained over with --overwrite), not this run's newest.
        pointer_written = osp.getmtime(pointer)
        stale = {p for p in numbered if _step_of(p) > _step_of(named)
                 and osp.getmtime(p) < pointer_written}
        for path in sorted(stale, key=_step_of):
            _log(f'mmelsa: not resuming from {path}: it is older than last_checkpoint (which '
                 f'names {named}), so it is left from an earlier run', logging.WARNING)
        numbered -= stale
    candidates = sorted(numbered | ({named} if named else set()), key=_step_of, reverse=True)
    if named and _step_of(named) < 0:  # a name of the user's own pattern: the pointer decides
        candidates.remove(named)
        candidates.insert(0, named)
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            if path != named:
                _log(f'mmelsa: resuming from {path}, the newest intact checkpoint in '
                     f'{osp.dirname(path)} (last_checkpoint names {named})', logging.WARNING)
            return path
        _log(f'mmelsa: skipping checkpoint {path}: {problem} (a save that was interrupted?)',
             logging.WARNING)
    _log(f'mmelsa: --resume found no checkpoint to resume in {work_dir}; training starts from '
         'the beginning', logging.WARNING)
    return None


def _is_local(filename, file_client_args, backend_args):
    if file_client_args is not None or backend_args not in (None, {}):
        return backend_args is not None and backend_args.get('backend') == 'local'
    return '://' not in str(filename)


def _atomic_save_checkpoint(original):

    def save_checkpoint(checkpoint, filename, file_client_args=None, backend_args=None):
        if not _is_local(filename, file_client_args, backend_args):
            return original(checkpoint, filename, file_client_args=file_client_args,
                            backend_args=backend_args)
        atomic_write(filename, lambda f: torch.save(checkpoint, f))
        _remove_stale_partials(osp.dirname(osp.abspath(filename)))

    save_checkpoint.__doc__ = original.__doc__
    save_checkpoint.mmelsa_original = original
    return save_checkpoint


class _DeferredRemovals:
    """Collects the file backend's removals during a save and performs them afterwards,
    except those of a path that ``keep()`` names once the save is done (a new best checkpoint
    saved under the old one's name, as a filename_tmpl without {} gives)."""

    def __init__(self, backend, keep=lambda: ()):
        self.backend = backend
        self.keep = keep
        self.pending = []

    def __enter__(self):
        for name in ('remove', 'rmtree'):
            original = getattr(self.backend, name)
            setattr(self.backend, name,
                    lambda path, _fn=original: self.pending.append((_fn, path)))
        return self

    def __exit__(self, exc_type, exc, tb):
        for name in ('remove', 'rmtree'):
            self.backend.__dict__.pop(name, None)  # back to the class's methods
        if exc_type is None:
            kept = set(self.keep())
            for fn, path in self.pending:
                if path not in kept:
                    fn(path)
        return False


def _current_checkpoints(hook):
    """The paths a CheckpointHook holds as its latest and best checkpoints."""
    paths = [getattr(hook, 'last_ckpt', None), getattr(hook, 'best_ckpt_path', None)]
    paths += list(getattr(hook, 'best_ckpt_path_dict', {}).values())
    return [p for p in paths if p]


class _AtomicTextFile(io.StringIO):
    """Stands in for ``open(last_checkpoint, 'w')``: the text goes to the file atomically
    (:func:`atomic_write`) when it is closed, so a kill leaves the old pointer or the new one."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def close(self):
        if not self.closed:
            text = self.getvalue()
            super().close()
            atomic_write(self.path, lambda f: f.write(text.encode()))


@contextlib.contextmanager
def _atomic_pointer(module, pointer):
    """While a CheckpointHook method runs, ``open(pointer, 'w')`` in the hook's ``module`` (its
    only way of writing ``last_checkpoint``) returns an :class:`_AtomicTextFile`; every other
    ``open`` is the builtin one."""
    pointer = osp.abspath(pointer)

    def hook_open(file, mode='r', *args, **kwargs):
        if 'w' in mode and isinstance(file, (str, os.PathLike)) and \
                osp.abspath(os.fspath(file)) == pointer:
            return _AtomicTextFile(pointer)
        return builtins.open(file, mode, *args, **kwargs)

    module.open = hook_open
    try:
        yield
    finally:
        del module.open


def _safe_save_step(method):
    """Wrap a CheckpointHook save (``_save_checkpoint_with_step``, ``_save_best_checkpoint``)
    so that files it deletes go only once it has saved and the checkpoints it holds as latest
    and best are kept, and ``last_checkpoint`` is written atomically."""
    import mmengine.hooks.checkpoint_hook as hook_module

    @functools.wraps(method)
    def wrapper(self, runner, *args, **kwargs):
        if getattr(self, '_mmelsa_saving', False):  # _save_best_checkpoint calls the other
            return method(self, runner, *args, **kwargs)
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        self._mmelsa_saving = True
        try:
            with _DeferredRemovals(self.file_backend, keep=lambda: _current_checkpoints(self)), \
                    _atomic_pointer(hook_module, pointer):
                return method(self, runner, *args, **kwargs)
        finally:
            self._mmelsa_saving = False

    wrapper.mmelsa_original = method
    return wrapper


def install():
    """Apply the three changes of the module docstring to mmengine (idempotent)."""
    import mmengine.runner
    import mmengine.runner.checkpoint as mm_checkpoint
    import mmengine.runner.runner as mm_runner
    from mmengine.hooks import CheckpointHook

    if not hasattr(mm_checkpoint.save_checkpoint, 'mmelsa_original'):
        safe_save = _atomic_save_checkpoint(mm_checkpoint.save_checkpoint)
        for module in (mm_checkpoint, mm_runner, mmengine.runner):
            module.save_checkpoint = safe_save
    for module in (mm_checkpoint, mm_runner, mmengine.runner):
        module.find_latest_checkpoint = find_latest_intact_checkpoint
    for name in ('_save_checkpoint_with_step', '_save_best_checkpoint'):
        if not hasattr(getattr(CheckpointHook, name), 'mmelsa_original'):
            setattr(CheckpointHook, name, _safe_save_step(getattr(CheckpointHook, name)))
