"""What an evaluation run (tools/test.py) adds to a config, as mmdet's and mmseg's test tools
make them: painted predictions (``--show`` / ``--show-dir``) and test-time augmentation
(``--tta``). Kept here, not in tools/test.py, so that every entry point and the tests share one
version."""
import copy
import os.path as osp

from ..utils.toolboxes import task_of
from .preflight import UsageError, inner_datasets


def enable_visualization(cfg, show=False, show_dir=None, wait_time=2):
    """Draw the predictions: in a window (``show``) and/or into ``show_dir``."""
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        raise UsageError('--show/--show-dir need default_hooks.visualization in the config '
                         '(DetVisualizationHook / SegVisualizationHook / VisualizationHook)')
    vis = hooks['visualization']
    task = task_of(cfg)
    # mmpretrain's hook is switched on by `enable` and writes to `out_dir`
    vis['enable' if task == 'cls' else 'draw'] = True
    if show:
        vis['show'] = True
        vis['wait_time'] = wait_time
    if show_dir:
        if task == 'cls':
            vis['out_dir'] = show_dir
        elif task == 'det':
            vis['test_out_dir'] = show_dir
        else:
            # mmseg's LocalVisBackend writes to <save_dir>/vis_data/vis_image; a relative
            # --show-dir goes under the work dir (as mmdet's hook does) rather than the cwd.
            cfg.visualizer['save_dir'] = show_dir if osp.isabs(show_dir) else \
                osp.join(cfg.work_dir, show_dir)
            # SegVisualizationHook draws every `interval`-th test image (default 50); a
            # folder of predictions is asked for here, so draw them all, as mmdet's hook does.
            vis['interval'] = 1


def _use_test_pipeline(cfg, pipeline):
    for ds in inner_datasets(cfg.test_dataloader.dataset):
        ds.pipeline = pipeline


def enable_tta(cfg):
    """Wrap ``cfg.model`` in the task's TTA model and give the test set the TTA pipeline:
    multi-scale + flip for segmentation (the config's), horizontal flip for box-only detectors;
    refused for detectors with masks (mmdet 3.3 would merge the boxes and drop the masks)."""
    task = task_of(cfg)
    if task in ('seg', 'cls'):
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise UsageError('--tta needs tta_model and tta_pipeline in the config '
                             '(mmseg::_base_/datasets/ade20k.py defines them; for a classifier '
                             'e.g. AverageClsScoreTTA and a TestTimeAug pipeline)')
        _use_test_pipeline(cfg, cfg.tta_pipeline)
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
        return
    # Detection: mmdet 3.3's DetTTAModel merges boxes only; with a mask head it would drop
    # (or mis-merge) the masks, so refuse rather than report a wrong segm AP.
    roi_head = cfg.model.get('roi_head') or {}
    if roi_head.get('mask_head'):
        raise UsageError('--tta for detection: mmdet 3.3 merges boxes only, and this '
                         'model predicts masks; test without --tta')
    if 'tta_model' not in cfg:
        cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(
            nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg:
        test_set = next(inner_datasets(cfg.test_dataloader.dataset))
        pipeline = copy.deepcopy(test_set.pipeline)
        pipeline[-1] = dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
            [dict(type='PackDetInputs', meta_keys=(
                'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                'flip_direction'))]])
        cfg.tta_pipeline = pipeline
    cfg.model = dict(**cfg.tta_model, module=cfg.model)
    _use_test_pipeline(cfg, cfg.tta_pipeline)
