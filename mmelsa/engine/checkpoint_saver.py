"""Checkpoint saving that a kill cannot turn into lost work, for every mmengine Runner.

mmengine 0.10.7 writes a checkpoint straight into its final name, writes ``last_checkpoint``
in place, and with ``max_keep_ckpts`` deletes the oldest checkpoint *before* writing the new one.
A SIGKILL at the wrong moment (an OOM killer, a pre-empted job, a Ctrl-C escalated to kill)
therefore leaves a truncated ``epoch_N.pth``, an empty ``last_checkpoint`` that makes
``--resume`` fail although intact checkpoints exist, or no checkpoint at all.

:func:`install` (called by ``import mmelsa``) changes three things, so that any Runner in a
process that imported mmelsa saves safely, whichever tool started it:

* local checkpoint files and ``last_checkpoint`` are written atomically: into a temporary file
  in the same folder, flushed and fsynced, then renamed over the final name (:func:`atomic_write`);
* ``CheckpointHook`` removes an expired checkpoint (``max_keep_ckpts``, an older best
  checkpoint) only after the new checkpoint and ``last_checkpoint`` are complete;
* resuming from ``last_checkpoint`` (bare ``--resume``) checks the file it points at and, when
  that is missing or damaged, warns and takes the newest intact checkpoint of the folder
  (:func:`find_latest_intact_checkpoint`).
"""
import contextlib
import glob
import logging
import os
import os.path as osp
import re
import zipfile

import torch

#: suffix of the temporary files that :func:`atomic_write` renames into place
PARTIAL_SUFFIX = '.mmelsa-partial'
_CHECKPOINT_NAME = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')

__all__ = ['atomic_write', 'checkpoint_problem', 'find_latest_intact_checkpoint',
           'existing_checkpoints', 'install']


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


def atomic_write(path, write):
    """Create or replace ``path`` so that it is either the old file or the complete new one.

    ``write(f)`` writes the content into a binary file object; it goes to a temporary file
    beside ``path`` that is flushed, fsynced and then renamed over ``path``.
    """
    path = osp.abspath(path)
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    partial = osp.join(folder, f'.{osp.basename(path)}.{os.getpid()}{PARTIAL_SUFFIX}')
    try:
        with open(partial, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise
    _fsync_folder(folder)


def _remove_stale_partials(folder):
    """Temporary files of saves that were killed; a finished save makes them worthless."""
    for stale in glob.glob(osp.join(folder, f'.*{PARTIAL_SUFFIX}')):
        with contextlib.suppress(OSError):
            os.remove(stale)


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


def _step_of(path):
    match = _CHECKPOINT_NAME.match(osp.basename(path))
    return int(match.group(1)) if match else -1


def existing_checkpoints(folder):
    """The ``epoch_*.pth`` / ``iter_*.pth`` files in ``folder``, newest (highest step) first."""
    found = [p for p in glob.glob(osp.join(folder, '*.pth')) if _step_of(p) >= 0]
    return sorted(found, key=_step_of, reverse=True)


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


def _wrap_save_checkpoint(original):

    def save_checkpoint(checkpoint, filename, file_client_args=None, backend_args=None):
        if not _is_local(filename, file_client_args, backend_args):
            return original(checkpoint, filename, file_client_args=file_client_args,
                            backend_args=backend_args)
        atomic_write(filename, lambda f: torch.save(checkpoint, f))
        _remove_stale_partials(osp.dirname(osp.abspath(filename)))

    save_checkpoint.__doc__ = original.__doc__
    save_checkpoint.mmelsa_atomic = True
    return save_checkpoint


def _write_last_checkpoint(runner, target):
    if not osp.isdir(runner.work_dir):
        os.makedirs(runner.work_dir, exist_ok=True)
    atomic_write(osp.join(runner.work_dir, 'last_checkpoint'),
                 lambda f: f.write(str(target).encode()))


def _remove_checkpoint(hook, path):
    if hook.file_backend.isfile(path):
        hook.file_backend.remove(path)
    elif hook.file_backend.isdir(path):  # deepspeed saves checkpoints as folders
        hook.file_backend.rmtree(path)


def _save_checkpoint_with_step(self, runner, step, meta):
    """CheckpointHook's save: the new checkpoint, then ``last_checkpoint``, then pruning."""
    from mmengine.dist import is_main_process

    expired = None
    if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
        # The ids are updated before the save (they are part of the checkpoint); only the
        # deletion waits until the new file is complete.
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            expired = self.keep_ckpt_ids.popleft()
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

    ckpt_filename = self.filename_tmpl.format(step)
    self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
    runner.message_hub.update_info('last_ckpt', self.last_ckpt)
    runner.save_checkpoint(self.out_dir, ckpt_filename, self.file_client_args,
                           save_optimizer=self.save_optimizer,
                           save_param_scheduler=self.save_param_scheduler, meta=meta,
                           by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
    if not is_main_process():
        return
    _write_last_checkpoint(runner, self.last_ckpt)
    if expired is None:
        return
    expired_path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(expired))
    # a filename_tmpl without {} ('latest.pth') names the file just written: keep it
    if expired_path != self.last_ckpt:
        _remove_checkpoint(self, expired_path)


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


def _defer_removals(method):
    """Wrap a CheckpointHook method so that files it deletes go only once it has saved."""

    def wrapper(self, runner, *args, **kwargs):
        with _DeferredRemovals(self.file_backend, keep=lambda: _current_checkpoints(self)):
            return method(self, runner, *args, **kwargs)

    wrapper.__doc__ = method.__doc__
    wrapper.mmelsa_deferred = True
    return wrapper


def install():
    """Apply the three changes of the module docstring to mmengine (idempotent)."""
    import mmengine.runner
    import mmengine.runner.checkpoint as mm_checkpoint
    import mmengine.runner.runner as mm_runner
    from mmengine.hooks import CheckpointHook

    if not getattr(mm_checkpoint.save_checkpoint, 'mmelsa_atomic', False):
        safe_save = _wrap_save_checkpoint(mm_checkpoint.save_checkpoint)
        for module in (mm_checkpoint, mm_runner, mmengine.runner):
            module.save_checkpoint = safe_save
    for module in (mm_checkpoint, mm_runner, mmengine.runner):
        module.find_latest_checkpoint = find_latest_intact_checkpoint
    CheckpointHook._save_checkpoint_with_step = _save_checkpoint_with_step
    if not getattr(CheckpointHook._save_best_checkpoint, 'mmelsa_deferred', False):
        CheckpointHook._save_best_checkpoint = _defer_removals(
            CheckpointHook._save_best_checkpoint)

