"""Kill a real training run at many points of its checkpoint saves, then resume it.

    python -m tests.engine.kill_during_save OUT_DIR MAX_KEEP_CKPTS NUM_POINTS

Prints one JSON report (see :func:`main`); tests/engine/test_checkpoint_saving.py asserts on it.

Each run is a forked child of this process, which only imports (no torch computation happens
before a fork, so the children's thread pools start clean). A child counts every file-system
step that could be cut short inside the work dir, whoever makes it: each ``write`` into a file
opened for writing there, and each ``fsync``, ``replace``/``rename`` and ``remove``/``unlink``.
That makes the kill points independent of how saving is implemented. One uninterrupted run
records the steps; kill points are then spread over the saves of iterations 2 and 3; for each, a
fresh run is SIGKILLed at that step and a second child resumes with ``resume=True`` and trains
to the end.
"""
import builtins
import json
import os
import os.path as osp
import shutil
import signal
import sys

import torch  # noqa: F401  (imported before forking, never used for computation here)

from mmelsa.engine import checkpoint_problem
from tests.engine.tiny_training import make_runner

MAX_ITERS = 3


def _instrument(work_dir, kill_at, log):
    """Count file-system steps in ``work_dir``; SIGKILL this process at step ``kill_at``."""
    work_dir = osp.realpath(work_dir)
    state = {'n': 0}

    def inside(path):
        try:
            return osp.realpath(os.fspath(path)).startswith(work_dir + os.sep)
        except TypeError:
            return False

    def step(kind, path):
        state['n'] += 1
        log.append((state['n'], kind, osp.basename(os.fspath(path))))
        if state['n'] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    real_open = builtins.open

    class CountedFile:

        def __init__(self, f, path):
            self._f, self._path = f, path

        def write(self, data):
            step('write', self._path)
            return self._f.write(data)

        def __enter__(self):
            self._f.__enter__()
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self._f, name)

    def counted_open(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, bytes, os.PathLike)) and inside(file) and \
                any(c in mode for c in 'wax+'):
            return CountedFile(f, file)
        return f

    builtins.open = counted_open

    def wrap_path_op(name, kind):
        real = getattr(os, name)

        def op(*args, **kwargs):
            if inside(args[0]):
                step(kind, args[0])
            return real(*args, **kwargs)

        setattr(os, name, op)

    for name, kind in (('replace', 'rename'), ('rename', 'rename'), ('remove', 'remove'),
                       ('unlink', 'remove')):
        wrap_path_op(name, kind)
    real_fsync = os.fsync

    def fsync(fd):
        step('fsync', f'fd{fd}')
        return real_fsync(fd)

    os.fsync = fsync


def _in_child(fn):
    """Run ``fn()`` in a forked child; returns (how it ended, what it returned)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 0
        try:
            result = fn()
            os.write(write_fd, json.dumps(result).encode())
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            os.write(write_fd, json.dumps({'error': repr(err)}).encode())
            code = 1
        finally:
            os.close(write_fd)
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    ended = 'killed' if os.WIFSIGNALED(status) else f'exit {os.WEXITSTATUS(status)}'
    return ended, (json.loads(b''.join(chunks)) if chunks else None)


def _train(work_dir, max_keep, kill_at=None):
    log = []
    _instrument(work_dir, kill_at, log)
    make_runner(work_dir, MAX_ITERS, max_keep_ckpts=max_keep).train()
    return log


def _resume(work_dir, max_keep):
    from mmengine.hooks import Hook

    class RecordStart(Hook):

        def before_train(self, runner):
            self.start = runner.iter

    hook = RecordStart()
    runner = make_runner(work_dir, MAX_ITERS, resume=True, max_keep_ckpts=max_keep,
                         custom_hooks=[hook])
    runner.train()
    return {'resumed_at': hook.start, 'final_iter': runner.iter}


def _intact(work_dir):
    return sorted(f for f in os.listdir(work_dir)
                  if f.endswith('.pth') and checkpoint_problem(osp.join(work_dir, f)) is None)


def main(out_dir, max_keep, num_points):
    """Report: the steps of a clean run, and for each kill point the step, the intact
    checkpoints left, what resuming started from and where it ended."""
    clean_dir = osp.join(out_dir, 'clean')
    ended, log = _in_child(lambda: _train(clean_dir, max_keep))
    assert ended == 'exit 0', (ended, log)
    # Kill points: from the first step of the save of iteration 2 to the end of the run.
    lo = min(n for n, _, name in log if 'iter_2.pth' in name)
    candidates = [n for n, _, _ in log if n >= lo]
    non_writes = [n for n, kind, _ in log if n >= lo and kind != 'write']
    stride = max(1, len(candidates) // max(1, num_points - len(non_writes)))
    points = sorted(set(candidates[::stride]) | set(non_writes))
    report = {'clean_steps': log, 'runs': []}
    for point in points:
        work_dir = osp.join(out_dir, f'kill_{point}')
        ended, _ = _in_child(lambda: _train(work_dir, max_keep, kill_at=point))
        intact = _intact(work_dir) if osp.isdir(work_dir) else []
        step = next(s for s in log if s[0] == point)
        resumed = _in_child(lambda: _resume(work_dir, max_keep))
        report['runs'].append({'kill_at': step, 'ended': ended, 'intact_after_kill': intact,
                               'resume': resumed, 'intact_at_end': _intact(work_dir)})
        shutil.rmtree(work_dir, ignore_errors=True)
    return report


if __name__ == '__main__':
    out, keep, points = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(main(out, keep, points)))
