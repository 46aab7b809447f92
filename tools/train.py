"""Train an ELSA detector (mmdet), segmenter (mmseg) or ImageNet classifier (mmpretrain) with
the mmengine Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]] [--overwrite]
                          [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
                          [--allow-partial-load] [--trust-checkpoint CKPT]

The task is read from the config (default_scope mmdet / mmseg / mmpretrain), so one tool serves
all three families. The flags are the toolboxes', plus the safety switches of mmelsa's SafeRunner:
a work dir that holds checkpoints is not trained into without ``--resume`` or ``--overwrite``.
Before the Runner is built, the data of the train (and val) sets is checked
(:func:`mmelsa.cli.preflight.check_datasets`: annotation records, images, the pixel bound
``MMELSA_MAX_IMAGE_PIXELS``); bad data ends in one line naming the file and the record.
"""
import argparse
import logging
import os.path as osp
import sys

from mmelsa import cli
from mmelsa.cli import preflight
from mmelsa.engine import check_work_dir_is_free
from mmelsa.utils.toolboxes import task_of


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Train an ELSA-Swin detector or segmenter')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and checkpoints')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic mixed precision (AmpOptimWrapper)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by total batch size / auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT; without a path, from the latest checkpoint in the work dir')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs merged into the config, e.g. '
             'train_cfg.max_epochs=1 "model.backbone.depths=[2,2,6,2]"')
    cli.add_launcher_flags(parser)
    cli.add_checkpoint_flags(parser, overwrite=True)
    args = parser.parse_args(argv)
    cli.export_local_rank(args)
    return args


def build_cfg(args):
    cfg = preflight.load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    # work_dir priority: CLI > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print('info: AMP is already enabled in the config', file=sys.stderr)
        else:
            if wrapper != 'OptimWrapper':
                raise preflight.UsageError(f'--amp upgrades an OptimWrapper to AmpOptimWrapper; '
                                           f'this config uses optim_wrapper.type={wrapper}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise preflight.UsageError('--auto-scale-lr needs auto_scale_lr.base_batch_size in '
                                       'the config')
        cfg.auto_scale_lr.enable = True

    # --resume: with a path resume from it; bare --resume lets the Runner find
    # <work_dir>/last_checkpoint (mmdet's behaviour).
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        preflight.check_resume_checkpoint(args.resume)
        cfg.resume = True
        cfg.load_from = args.resume

    cli.apply_checkpoint_flags(cfg, args)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = build_cfg(args)
        loaders = ['train_dataloader']
        if cfg.get('val_cfg') and cfg.get('val_dataloader'):
            loaders.append('val_dataloader')
        preflight.check_datasets(cfg, loaders)
        preflight.check_backbone_arguments(cfg)
        if not cfg.get('resume') and not cfg.get('load_from'):
            preflight.check_pretrained(cfg)  # a resumed/fine-tuned run loads over the init
        preflight.check_amp_device(cfg)
        if not cfg.get('resume') and not cfg.get('overwrite_checkpoints'):
            cli.run_guarded(lambda: check_work_dir_is_free(cfg.work_dir))
    except preflight.UsageError as e:
        cli.fail(str(e))

    from mmengine.logging import print_log
    task = task_of(cfg)
    runner = cli.build_runner(cfg)
    print_log(f'mmelsa: {task} training, work dir {osp.abspath(cfg.work_dir)}',
              logger='current', level=logging.INFO)
    cli.run_guarded(runner.train)


if __name__ == '__main__':
    main()
