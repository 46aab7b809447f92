"""What mmelsa adds to mmengine's training engine: safe checkpoint loading and saving, and the
:class:`SafeRunner` (registered in mmengine's ``RUNNERS``)."""
from .checkpoint_loader import (TRUST_ENV, CheckpointError, CheckpointMismatchError,
                                CorruptCheckpointError, UnsafeCheckpointError,
                                UntrustedConfigError, load_checkpoint_file, trust_checkpoint)
from .checkpoint_saver import atomic_write, checkpoint_problem, find_latest_intact_checkpoint
from .runner import (SafeRunner, WorkDirNotEmptyError, check_checkpoint_fits,
                     check_loaded_checkpoint_fits, check_work_dir_is_free)

__all__ = [
    'TRUST_ENV', 'CheckpointError', 'CorruptCheckpointError', 'UnsafeCheckpointError',
    'UntrustedConfigError',
    'load_checkpoint_file', 'trust_checkpoint', 'atomic_write', 'checkpoint_problem',
    'find_latest_intact_checkpoint', 'SafeRunner', 'CheckpointMismatchError',
    'WorkDirNotEmptyError', 'check_checkpoint_fits', 'check_loaded_checkpoint_fits',
    'check_work_dir_is_free'
]
