"""Reading checkpoints safely, and checking that they fit a model.

Shared by the models (``init_cfg=Pretrained``), the engine (mmengine's loaders, the Runner, the
Inferencers), the deployment and the tools; it depends on none of them.
"""
from .config_text import gpu_ids_line, remove_config_text
from .fit import check_checkpoint_fits, check_loaded_checkpoint_fits
from .reading import (TRUST_ENV, CheckpointError, CheckpointMismatchError,
                      CorruptCheckpointError, UnsafeCheckpointError, UntrustedConfigError,
                      cached_path, download, is_trusted, mmengine_safe_globals, read_checkpoint,
                      read_checkpoint_file, trust_checkpoint)

__all__ = [
    'TRUST_ENV', 'CheckpointError', 'CheckpointMismatchError', 'CorruptCheckpointError',
    'UnsafeCheckpointError', 'UntrustedConfigError', 'cached_path', 'download', 'is_trusted',
    'mmengine_safe_globals', 'read_checkpoint', 'read_checkpoint_file', 'trust_checkpoint',
    'check_checkpoint_fits', 'check_loaded_checkpoint_fits', 'gpu_ids_line',
    'remove_config_text'
]
