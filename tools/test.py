"""Test (and evaluate) an ELSA detector, segmenter or ImageNet classifier.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE_OR_DIR [--overwrite]]
                         [--show]
                         [--show-dir DIR] [--tta] [--cfg-options k=v ...] [--launcher ...]
                         [--allow-partial-load] [--trust-checkpoint CKPT]

Flags follow mmdet / mmseg / mmpretrain; the task is the config's default_scope. ``--out``:
detection and classification dump raw predictions to a .pkl file (mmdet's DumpDetResults,
mmengine's DumpResults as mmpretrain does); segmentation writes prediction PNGs into the
folder (mmseg's IoUMetric output_dir); an existing file, or a folder with files, is kept
unless ``--overwrite`` is given. ``--out`` is checked with the arguments (a folder where a file
is expected, a file where a folder is, the wrong suffix, a place that cannot be written), and
the test set's data as tools/train.py checks it, before the test starts. ``--show-dir``:
painted predictions go to ``<work_dir>/<timestamp>/<show-dir>`` (det, as mmdet does) or
``<work_dir>/<show-dir>/vis_data/vis_image`` (seg; an absolute --show-dir is used as given)
or ``<show-dir>`` (cls, mmpretrain's VisualizationHook).
``--tta``: multi-scale + flip for segmentation (the ADE20K numbers are ms+flip), horizontal
flip for box-only detectors.
The metrics are logged and also printed on the last line as JSON (``mmelsa-metrics: {...}``)
so scripts can pick them up. A checkpoint that does not fit the model is an error (it would
report the metrics of random weights) unless ``--allow-partial-load`` is given.
"""
import argparse
import json
import os.path as osp

from mmelsa import cli
from mmelsa.cli import evaluation, preflight
from mmelsa.utils.toolboxes import task_of


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Test an ELSA-Swin detector or segmenter')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation log')
    parser.add_argument('--out', help='det / cls: dump predictions to this .pkl; seg: save '
                                      'prediction PNGs into this folder')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing --out file (det) or write into a non-empty '
                        '--out folder (seg)')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--show-dir', help='save painted predictions into this folder')
    parser.add_argument('--wait-time', type=float, default=2, help='--show interval (s)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    cli.add_launcher_flags(parser)
    cli.add_checkpoint_flags(parser)
    args = parser.parse_args(argv)
    cli.export_local_rank(args)
    return args


def build_cfg(args):
    cfg = preflight.load_config(args.config, args.cfg_options)
    if not osp.isfile(args.checkpoint):
        raise preflight.UsageError(f'checkpoint {args.checkpoint} does not exist')
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    # The trained checkpoint overrides the ImageNet init, so a placeholder pretrained path in
    # the config must not stop a test run.
    backbone = cfg.model.get('backbone')
    if backbone is not None and backbone.get('init_cfg'):
        backbone.init_cfg = None
    task = task_of(cfg)
    if args.show or args.show_dir:
        evaluation.enable_visualization(cfg, args.show, args.show_dir, args.wait_time)
    if args.tta:
        evaluation.enable_tta(cfg)
    if args.out is not None:
        # here, not when the predictions are written after the whole test
        preflight.check_out_path(args.out, task, args.overwrite)
    if args.out is not None and task == 'seg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    cli.apply_checkpoint_flags(cfg, args)
    return cfg, task


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg, task = build_cfg(args)
        preflight.check_datasets(cfg, ['test_dataloader'])
        preflight.check_backbone_arguments(cfg)
    except preflight.UsageError as e:
        cli.fail(str(e))

    runner = cli.build_runner(cfg)
    if args.out is not None and task == 'det':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    if args.out is not None and task == 'cls':  # as mmpretrain's tools/test.py
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    metrics = cli.run_guarded(runner.test)
    if runner.rank == 0:
        print('mmelsa-metrics: ' + json.dumps({k: _plain(v) for k, v in (metrics or {}).items()}),
              flush=True)


def _plain(value):
    """Metric values come as Python, numpy or torch scalars; JSON wants plain numbers."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


if __name__ == '__main__':
    main()
