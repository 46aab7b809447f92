"""What mmelsa changes in mmengine's training engine, all installed by :mod:`.patches`: safe
checkpoint reading for every loader (:mod:`.loading`), kill-safe saving (:mod:`.saving`), the
Inferencers' checks (:mod:`.inferencers`), safe YAML (:mod:`.safe_yaml`); and the
:class:`SafeRunner` (registered in mmengine's ``RUNNERS``) with its CPU-only distributed set-up."""
from .runner import SafeRunner, WorkDirNotEmptyError, check_work_dir_is_free
from .saving import atomic_write, checkpoint_problem, find_latest_intact_checkpoint

__all__ = [
    'SafeRunner', 'WorkDirNotEmptyError', 'check_work_dir_is_free', 'atomic_write',
    'checkpoint_problem', 'find_latest_intact_checkpoint'
]
