"""What mmelsa's command-line tools share: one-line errors, the Runner, the flags that relax a
safety check for one run (:mod:`.common`), the checks made before a run starts
(:mod:`.preflight`) and what an evaluation run adds to a config (:mod:`.evaluation`)."""
from . import evaluation, preflight
from .common import (add_checkpoint_flags, add_launcher_flags, apply_checkpoint_flags,
                     build_runner, export_local_rank, fail, positive_int, run_guarded,
                     trust_checkpoints)
from .preflight import UsageError

__all__ = [
    'evaluation', 'preflight', 'UsageError', 'add_checkpoint_flags', 'add_launcher_flags',
    'apply_checkpoint_flags', 'build_runner', 'export_local_rank', 'fail', 'positive_int',
    'run_guarded', 'trust_checkpoints'
]
