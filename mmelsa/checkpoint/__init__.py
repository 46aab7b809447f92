"""Reading checkpoints safely, and checking that they fit a model.

One gate (:mod:`.gate`) turns checkpoint bytes into objects: trusted bytes (:mod:`.trust`) in
full, all others through a restricted unpickler (:mod:`.unpickle`) into plain data
(:mod:`.plain`) without config text (:mod:`.config_text`). :mod:`.reading` reads files and URLs
into it; :mod:`.fit` checks loaded weights against a model.

Shared by the models (``init_cfg=Pretrained``), the engine (mmengine's loaders, the Runner, the
Inferencers), the deployment and the tools; it depends on none of them.
"""
from .config_text import gpu_ids_line, remove_config_text
from .errors import (CheckpointError, CheckpointMismatchError, CheckpointTooLargeError,
                     CorruptCheckpointError, UnsafeCheckpointError, UntrustedConfigError)
from .fit import check_checkpoint_fits, check_loaded_checkpoint_fits
from .gate import load_bytes
from .reading import (cached_path, download, is_trusted, read_checkpoint, read_checkpoint_bytes,
                      read_checkpoint_file)
from .trust import TRUST_ENV, TrustListError, trust_checkpoint

__all__ = [
    'TRUST_ENV', 'CheckpointError', 'CheckpointMismatchError', 'CheckpointTooLargeError',
    'CorruptCheckpointError', 'UnsafeCheckpointError', 'UntrustedConfigError', 'TrustListError',
    'cached_path', 'download', 'is_trusted', 'load_bytes', 'read_checkpoint',
    'read_checkpoint_bytes', 'read_checkpoint_file', 'trust_checkpoint', 'check_checkpoint_fits',
    'check_loaded_checkpoint_fits', 'gpu_ids_line', 'remove_config_text'
]
