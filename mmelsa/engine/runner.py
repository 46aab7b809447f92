"""``SafeRunner``: mmengine's Runner that neither loses nor falsifies a user's work.

Registered in mmengine's root ``RUNNERS`` (which mmdet's and mmseg's child registries search),
so a config selects it with ``runner_type = 'SafeRunner'`` and mmdet's / mmseg's own
``tools/train.py`` and ``tools/test.py`` build it; mmelsa's tools always use it. Compared with
mmengine 0.10.7's Runner it

* refuses a checkpoint that does not fit the model (``load_from``, ``tools/test.py CONFIG
  CKPT``, ``--resume``): missing or unexpected model keys or wrong shapes are an error naming a
  few of them, instead of a test that reports the mAP of random weights. ``allow_partial_load =
  True`` in the config (``--allow-partial-load``) loads what fits, as mmengine does;
* refuses to train into a work dir that already holds checkpoints unless the run resumes
  (``--resume``) or the config says ``overwrite_checkpoints = True`` (``--overwrite``): files
  named like mmengine's ``epoch_{}.pth`` / ``iter_{}.pth`` or like the ``filename_tmpl`` of a
  CheckpointHook that saves there;
* runs distributed on CPU-only machines (gloo, DDP without device ids;
  :mod:`mmelsa.engine.distributed`);
* resumes with the learning rate the interrupted run had: mmengine 0.10.7's ``Runner.resume``
  loads the optimizer state and then *builds* the parameter schedulers, and every scheduler steps
  once in its constructor, so a LinearLR warm-up multiplies the restored lr by its
  ``start_factor`` again (open-mmlab/mmengine#1542). The param-group values are put back right
  after the schedulers are built during a resume (their states are loaded afterwards).
"""
import copy
import os.path as osp

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..checkpoint import check_loaded_checkpoint_fits
from .saving import DEFAULT_FILENAME_TMPLS, existing_checkpoints

__all__ = ['SafeRunner', 'WorkDirNotEmptyError', 'check_work_dir_is_free',
           'checkpoint_filename_tmpl']


class WorkDirNotEmptyError(RuntimeError):
    """A new training run would overwrite the checkpoints of an earlier one."""


def checkpoint_filename_tmpl(hook):
    """The file name template a CheckpointHook (or its config dict) saves under: its
    ``filename_tmpl``, else mmengine's default for its ``by_epoch`` (True unless set)."""
    get = hook.get if isinstance(hook, dict) else lambda key, default=None: getattr(
        hook, key, default)
    tmpl = get('filename_tmpl', None)
    if tmpl is None:
        tmpl = 'epoch_{}.pth' if get('by_epoch', True) else 'iter_{}.pth'
    return tmpl


def check_work_dir_is_free(work_dir, filename_tmpls=()):
    """Raise :class:`WorkDirNotEmptyError` when ``work_dir`` holds checkpoints: files named as
    mmengine's default ``epoch_{}.pth`` / ``iter_{}.pth`` or one of ``filename_tmpls`` (the
    templates of the CheckpointHooks that will save there) names them."""
    tmpls = tuple(dict.fromkeys((*DEFAULT_FILENAME_TMPLS, *filename_tmpls)))
    found = existing_checkpoints(work_dir, tmpls) if osp.isdir(work_dir) else []
    if found:
        shown = ', '.join(osp.basename(p) for p in found[:3])
        raise WorkDirNotEmptyError(
            f'work dir {work_dir} already holds checkpoints ({shown}'
            f'{", ..." if len(found) > 3 else ""}) and training would overwrite them. Pass '
            '--resume to continue that run, --work-dir DIR to train elsewhere, or, to replace '
            'them, --cfg-options overwrite_checkpoints=True (any train.py, mim train) or '
            '--overwrite (mmelsa\'s tools/train.py).')


@RUNNERS.register_module(force=True)
class SafeRunner(Runner):
    """See the module docstring. Config keys read on top of mmengine's:
    ``allow_partial_load`` (default False) and ``overwrite_checkpoints`` (default False)."""

    @classmethod
    def from_cfg(cls, cfg):
        from .distributed import init_cpu_process_group, use_gloo_without_cuda
        cfg = copy.deepcopy(cfg)
        use_gloo_without_cuda(cfg)
        init_cpu_process_group(cfg)
        return super().from_cfg(cfg)

    def _option(self, key):
        return bool(self.cfg.get(key, False)) if self.cfg is not None else False

    # ----------------------------------------------------------------- loading
    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):  # noqa: B006 (mmengine's signature)
        from mmengine.model import BaseTTAModel, is_model_wrapper
        from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

        from .loading import fit_checked_elsewhere, partial_allowed

        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        # mmengine loads a test-time-augmentation model's weights into the model it wraps
        inner = model.module if isinstance(model, BaseTTAModel) else model
        check_loaded_checkpoint_fits(
            inner, checkpoint, filename, revise_keys,
            allow_partial=not strict and (self._option('allow_partial_load')
                                          or partial_allowed()))
        with fit_checked_elsewhere():
            checkpoint = _load_checkpoint_to_model(model, checkpoint, strict,
                                                   revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    # ----------------------------------------------------------------- training
    def train(self):
        if not self._resume and not self._option('overwrite_checkpoints'):
            for folder, tmpls in self._checkpoint_folders().items():
                check_work_dir_is_free(folder, tmpls)
        return super().train()

    def _checkpoint_folders(self):
        """``{folder: file name templates}``: the work dir, and where each CheckpointHook with
        an ``out_dir`` will save (mmengine appends the work dir's last folder name to it), each
        with the ``filename_tmpl`` of the hooks saving there (a custom one, ``'ckpt_{}.pth'``,
        is protected like the defaults); remote storage is not checked."""
        from mmengine.hooks import CheckpointHook
        folders = {self.work_dir: []}
        for hook in self.hooks:
            if not isinstance(hook, CheckpointHook):
                continue
            out_dir = getattr(hook, 'out_dir', None)
            folder = self.work_dir
            if out_dir and out_dir != self.work_dir:
                if '://' in str(out_dir):
                    continue
                folder = osp.join(out_dir, osp.basename(self.work_dir.rstrip(osp.sep)))
            folders.setdefault(folder, []).append(checkpoint_filename_tmpl(hook))
        return folders

    def resume(self, *args, **kwargs):
        self._mmelsa_resuming = True
        try:
            return super().resume(*args, **kwargs)
        finally:
            self._mmelsa_resuming = False

    def build_param_scheduler(self, scheduler):
        if not getattr(self, '_mmelsa_resuming', False):
            return super().build_param_scheduler(scheduler)
        wrappers = (self.optim_wrapper.values() if hasattr(self.optim_wrapper, 'values') else
                    [self.optim_wrapper])
        groups = [g for w in wrappers for g in w.optimizer.param_groups]
        saved = [{k: v for k, v in g.items() if k != 'params'} for g in groups]
        built = super().build_param_scheduler(scheduler)
        for group, values in zip(groups, saved):
            group.update(values)
        return built
