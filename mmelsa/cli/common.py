"""What mmelsa's command-line tools share: one-line errors, the Runner, and the flags that
relax a safety check for one run."""
import argparse
import os
import sys

from .preflight import UsageError  # noqa: F401  (re-exported for the tools)


def fail(msg):
    """Print ``msg`` as a one-screen error and exit with status 2 (argparse's usage code)."""
    sys.stderr.write(f'error: {msg}\n')
    sys.exit(2)


def positive_int(text):
    """argparse type for sizes and counts: an int >= 1 (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {value}')
    return value


def build_runner(cfg):
    """The Runner a config asks for (``runner_type``), else mmelsa's :class:`SafeRunner`."""
    from ..engine.runner import SafeRunner
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS
        return RUNNERS.build(cfg)
    return SafeRunner.from_cfg(cfg)


def run_guarded(action):
    """Run ``action()``; a checkpoint that cannot be used or a work dir that would be
    overwritten ends in one line (exit 2) instead of a traceback."""
    from ..checkpoint import CheckpointError
    from ..engine.runner import WorkDirNotEmptyError
    try:
        return action()
    except (CheckpointError, WorkDirNotEmptyError, FileNotFoundError) as err:
        fail(str(err))


def add_launcher_flags(parser):
    """--launcher, and the rank flag that torch.distributed.launch passes (--local-rank from
    torch 2.0, --local_rank before)."""
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def export_local_rank(args):
    """mmengine reads the rank from LOCAL_RANK; a launcher that passed it as a flag has not set
    it."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)


def add_checkpoint_flags(parser, overwrite=False):
    """The flags of tools/train.py and tools/test.py that relax a safety check, each for one
    run and named for what it allows."""
    parser.add_argument(
        '--allow-partial-load', action='store_true',
        help='load a checkpoint that does not fit the model (missing, unexpected or '
             'wrong-shape keys): only what fits is loaded. Default: such a checkpoint is an error')
    parser.add_argument(
        '--trust-checkpoint', action='append', default=[], metavar='CKPT',
        help='allow a full unpickle of this checkpoint file, which can run code stored in it; '
             'only for files you trust. It is trusted by its content: the sha256 digest is '
             'printed (repeatable; env: MMELSA_TRUSTED_CHECKPOINTS=sha256:<digest>)')
    if overwrite:
        parser.add_argument(
            '--overwrite', action='store_true',
            help='train into a work dir that already holds checkpoints, replacing them')


def trust_checkpoints(paths):
    """``--trust-checkpoint`` for each of ``paths``: trusted by content, and the digest printed
    (it is the entry that trusts the same bytes elsewhere)."""
    from ..checkpoint import trust_checkpoint
    for path in paths:
        print(f'trusting {path}: {trust_checkpoint(path)}', flush=True)


def apply_checkpoint_flags(cfg, args):
    trust_checkpoints(args.trust_checkpoint)
    if args.allow_partial_load:
        cfg.allow_partial_load = True
    if getattr(args, 'overwrite', False):
        cfg.overwrite_checkpoints = True
