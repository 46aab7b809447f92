"""Export an ELSA-Swin model to ONNX, check it, and compare ONNX Runtime with PyTorch.

What is exported (--part):

* ``whole`` (the default): the whole model, post-processing included (a detector's RPN, RoI
  heads and NMS; a segmenter's decode head), converted through MMDeploy with a deploy config
  (--deploy-cfg, default ours in configs/mmdeploy/ for the config's task: dynamic shapes for a
  detector, 192 x 192 for a segmenter), traced on --image. Prints the agreement on that image:
  a detector's detections scoring at least --score-thr (default 0.05) in either model, matched
  one to one (same label, box IoU >= 0.5, in score order; boxes of a pair within 0.5 px, mask
  IoU printed), a segmenter's argmax agreement on the raw logits.
* ``model``: the model in tensor mode by a plain torch.onnx.export (a segmenter's logits; a
  detector's backbone + neck features), at --shape (default: --image's size).
* ``backbone``: the backbone alone, likewise.

For ``model`` / ``backbone`` the file is checked with onnx.checker and run in ONNX Runtime
next to PyTorch on one image (--image, resized to --shape, else a random one); the largest
absolute difference per output is printed (an error, exit 2, above --rtol of the output's
largest magnitude). With --benchmark, also the median latency of both (for ``whole`` end to
end: preprocessing, model, post-processing).

The file is written under a temporary name beside --out and moved onto it only once it exported
and passed the comparison: a failure (exit 2) never leaves a file at --out (with --overwrite,
the file that was there stays byte for byte). A file that exported but fails the comparison is
kept, to be looked at, as OUT.rejected.onnx beside --out (OUT: --out without .onnx; replaced
by the next rejected one), and the error names it.

Examples:
    python tools/deployment/pytorch2onnx.py \\
        configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py work_dirs/det.pth \\
        --image data/toy_coco/val/000000.jpg --out work_dirs/det.onnx --benchmark
    python tools/deployment/pytorch2onnx.py \\
        configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py work_dirs/seg.pth \\
        --part model --shape 128 128 --image data/toy_ade/images/validation/000000.jpg
"""
import argparse
import contextlib
import os
import os.path as osp

from mmelsa import cli
from mmelsa.cli.preflight import UsageError, load_config
from mmelsa.utils import toolboxes

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCORE_THRESHOLD = 0.05  # mmelsa.deployment.whole_model.SCORE_THRESHOLD (imported only on use)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config', help='mmdet / mmseg config with an ELSASwinTransformer backbone')
    p.add_argument('checkpoint', nargs='?', default=None,
                   help='checkpoint to load (default: the config\'s initialisation)')
    p.add_argument('--part', choices=['whole', 'model', 'backbone'], default='whole',
                   help='the whole model through MMDeploy (default), the model in tensor mode '
                   'or the backbone alone by a plain torch.onnx.export')
    p.add_argument('--deploy-cfg', default=None,
                   help='--part whole: MMDeploy deploy config (default: configs/mmdeploy/ for '
                   'the task)')
    p.add_argument('--score-thr', type=float, default=None,
                   help='--part whole, detector: compare the detections scoring at least this '
                   'in either model, matched one to one by label and box IoU (default %g)' %
                   SCORE_THRESHOLD)
    p.add_argument('--top', type=int, default=None, help=argparse.SUPPRESS)  # before --score-thr
    p.add_argument('--shape', type=int, nargs=2, default=None, metavar=('H', 'W'),
                   help='input height and width of the export (and of the comparison); with '
                   '--part whole it replaces the deploy config\'s input_shape (a segmenter '
                   'with pyramid pooling needs multiples of 192); --part model / backbone '
                   'default: --image\'s size')
    p.add_argument('--dynamic', action='store_true',
                   help='--part model / backbone: symbolic batch, height and width in the ONNX '
                   'file')
    p.add_argument('--out', default=None, help='ONNX file (default: <config name>.onnx)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing --out file (only with one that exported and '
                   'reproduces the model)')
    cli.add_checkpoint_flags(p)  # --allow-partial-load, --trust-checkpoint CKPT
    p.add_argument('--image', default=None,
                   help='image to trace (--part whole, required) and compare on (default for '
                   'model / backbone: random)')
    p.add_argument('--benchmark', action='store_true',
                   help='also print the median latency of ONNX Runtime and PyTorch')
    p.add_argument('--reps', type=int, default=10, help='timed runs for --benchmark')
    p.add_argument('--rtol', type=float, default=1e-3,
                   help='fail when an output of ONNX Runtime differs from PyTorch by more than '
                   'this fraction of the output\'s largest magnitude (default 1e-3)')
    exporter = p.add_mutually_exclusive_group()
    exporter.add_argument('--dynamo', dest='dynamo', action='store_true', default=True,
                          help='--part model / backbone: torch.onnx.export(dynamo=True) '
                          '(default)')
    exporter.add_argument('--legacy', dest='dynamo', action='store_false',
                          help='--part model / backbone: the TorchScript exporter, '
                          'torch.onnx.export(dynamo=False); MMDeploy always uses it')
    return p.parse_args(argv)


def check_args(args):
    if args.part == 'whole':
        if args.dynamic:
            raise UsageError('--dynamic is for --part model / backbone; with --part whole the '
                             'deploy config says which axes are dynamic (--deploy-cfg)')
        if args.shape is not None and min(args.shape) < 1:
            raise UsageError(f'--shape must be positive, got {args.shape[0]} {args.shape[1]}')
        if not args.image:
            raise UsageError('--part whole needs --image (the conversion traces on it)')
        if args.deploy_cfg and not osp.isfile(args.deploy_cfg):
            raise UsageError(f'--deploy-cfg not found: {args.deploy_cfg}')
        if args.top is not None:
            raise UsageError('--top is gone: the detections are now matched by label and box '
                             'IoU above a score threshold (--score-thr, default %g), not '
                             'compared rank by rank' % SCORE_THRESHOLD)
        if args.score_thr is not None and not 0 < args.score_thr <= 1:
            raise UsageError(f'--score-thr must be in (0, 1], got {args.score_thr}')
    elif args.shape is None:
        raise UsageError(f'--part {args.part} needs --shape H W (or --image, whose size it '
                         'then takes)')
    elif min(args.shape) < 1:
        raise UsageError(f'--shape must be positive, got {args.shape[0]} {args.shape[1]}')
    if args.checkpoint and not osp.isfile(args.checkpoint):
        raise UsageError(f'checkpoint not found: {args.checkpoint}')
    if args.image and not osp.isfile(args.image):
        raise UsageError(f'image not found: {args.image}')
    if args.reps < 1:
        raise UsageError(f'--reps must be >= 1, got {args.reps}')
    if not args.rtol > 0:
        raise UsageError(f'--rtol must be positive, got {args.rtol}')
    if osp.exists(output_path(args)) and not args.overwrite:
        raise UsageError(f'{output_path(args)} already exists: pass --overwrite to replace it, '
                         'or --out FILE')


def default_shape(args):
    """--part model / backbone without --shape: --image's (H, W) (None without --image)."""
    if not args.image or not osp.isfile(args.image):
        return None  # check_args says what is missing
    import mmcv
    img = mmcv.imread(args.image)
    if img is None:
        raise UsageError(f'cannot read image {args.image}')
    return [int(img.shape[0]), int(img.shape[1])]


def output_path(args):
    return args.out or osp.splitext(osp.basename(args.config))[0] + '.onnx'


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
        backbone = (cfg.get('model', {}) or {}).get('backbone', {}) or {}
        if str(backbone.get('type', '')).split('.')[-1] not in ('ELSASwinTransformer',
                                                                'ELSAVOLO'):
            raise UsageError(f'{args.config}: model.backbone is not an ELSASwinTransformer '
                             'or ELSAVOLO')
        task = toolboxes.task_of(cfg)
        if task == 'cls' and args.part == 'whole':
            # a classifier in tensor mode is the whole model (its logits): a plain export
            args.part = 'model'
            args.shape = args.shape or [224, 224]
        if args.part != 'whole' and args.shape is None:
            args.shape = default_shape(args)
        check_args(args)
        cli.apply_checkpoint_flags(cfg, args)
    except UsageError as err:
        cli.fail(str(err))
    if args.part == 'whole':
        return export_whole(args, cfg, toolboxes.scope_of(cfg))
    return export_part(args, cfg, task)


def export_part(args, cfg, task):
    """--part model / backbone: a plain torch.onnx.export, compared in ONNX Runtime."""
    import torch

    from mmelsa.deployment import (OnnxRunner, build_from_config, export_onnx, load_image,
                                   min_dynamic_size)
    from mmelsa.deployment.onnx_export import StagedFile
    from mmelsa.utils.benchmark import time_fn
    torch.manual_seed(0)
    from mmelsa.checkpoint import CheckpointError
    try:
        module, norm = build_from_config(cfg, args.checkpoint, part=args.part,
                                         allow_partial_load=args.allow_partial_load)
    except CheckpointError as err:
        cli.fail(str(err))
    low = min_dynamic_size(module)
    if args.dynamic and args.dynamo and min(args.shape) < low:
        cli.fail(f'--dynamic with the dynamo exporter needs --shape of at least {low} {low} '
                 f'for this model (torch.export specialises feature maps of size 1); use a '
                 f'larger --shape or --legacy')
    H, W = args.shape
    x = load_image(args.image, (H, W), norm) if args.image else torch.randn(1, 3, H, W)
    out = output_path(args)
    # written beside --out and moved onto it only once it exported and compared: a failure
    # leaves a file that --overwrite would have replaced as it was
    with StagedFile(out) as staged:
        try:
            export_onnx(module, x, staged.partial, dynamic=args.dynamic, dynamo=args.dynamo)
        except RuntimeError as err:
            cli.fail(str(err).splitlines()[0])
        what = ('backbone' if args.part == 'backbone' else
                'classifier (logits)' if task == 'cls' else 'model (tensor mode)')
        print(f'exported the {what} to {out} ({"dynamo" if args.dynamo else "legacy"} '
              f'exporter, {"dynamic" if args.dynamic else "static"} shape, '
              f'{os.path.getsize(staged.partial) / 2**20:.1f} MiB); onnx.checker: OK')
        runner = OnnxRunner(staged.partial)
        bad = compare_outputs(runner(x), module, x, args.rtol)
        if bad:
            fail_comparison(staged, out, bad)
        staged.publish()
    if args.benchmark:
        def run_torch():
            with torch.no_grad():
                module(x)

        # wall clock, as ONNX Runtime (CPU) is timed
        t_torch = time_fn(run_torch, 'cpu', args.reps, warmup=1)
        t_ort = time_fn(lambda: runner(x), 'cpu', args.reps, warmup=1)
        print(f'latency, median of {args.reps} runs, input {tuple(x.shape)}, '
              f'{torch.get_num_threads()} torch threads: pytorch {t_torch:.1f} ms, '
              f'onnxruntime {t_ort:.1f} ms ({t_torch / t_ort:.2f}x)')


def compare_outputs(got, module, x, rtol):
    """What differs between ONNX Runtime's outputs ``got`` and PyTorch's (printing each
    output's largest difference); empty when every output is within ``rtol``."""
    import numpy as np
    import torch
    with torch.no_grad():
        expected = module(x)
    bad = []
    for i, (g, e) in enumerate(zip(got, expected)):
        if tuple(g.shape) != tuple(e.shape):
            bad.append(f'output {i} has shape {tuple(g.shape)} in ONNX Runtime, '
                       f'{tuple(e.shape)} in PyTorch')
            continue
        diff, scale = float(np.abs(g - e.numpy()).max()), float(e.abs().max())
        print(f'output {i} {tuple(e.shape)}: max |onnxruntime - pytorch| = {diff:.3e} '
              f'(max |pytorch| = {scale:.3g})')
        if not diff <= rtol * max(scale, 1e-12):  # NaN fails too
            bad.append(f'output {i} differs by {diff:.3e}, more than --rtol {rtol:g} of '
                       f'its largest magnitude {scale:.3g}')
    if len(got) != len(expected):
        bad.append(f'{len(got)} outputs in ONNX Runtime, {len(expected)} in PyTorch')
    return bad


def rejected_path(out):
    """Where a file that fails the comparison is kept: OUT.rejected.onnx beside --out."""
    root, ext = osp.splitext(out)
    return (root if ext == '.onnx' else out) + '.rejected.onnx'


def fail_comparison(staged, out, problems):
    """Exit 2 for an export that does not reproduce the model. Nothing is left at --out (a file
    that was there, --overwrite, stays as it was); the new file is kept, to be looked at, at
    :func:`rejected_path`, which the message names."""
    rejected = rejected_path(out)
    kept = f'the file is kept as {rejected}'
    try:
        os.replace(staged.partial, rejected)  # a symlink there is replaced, not followed
    except OSError as err:
        kept = f'the file could not be kept ({err.strerror}: {rejected})'
    where = (f'{out} is left as it was' if osp.lexists(out) else f'nothing is written to {out}')
    cli.fail('the export does not reproduce the model: ' + '; '.join(problems) +
             f'; {where}, {kept}')


def export_whole(args, cfg, scope):
    import torch
    from mmengine.config import Config

    from mmelsa.deployment.onnx_export import StagedFile
    from mmelsa.deployment.whole_model import (DEFAULT_DEPLOY_CONFIGS, agreement,
                                               convert_whole_model, end_to_end_latency)
    from mmelsa.engine.loading import partial_load
    deploy_file = args.deploy_cfg or osp.join(REPO, DEFAULT_DEPLOY_CONFIGS[scope])
    deploy_cfg = Config.fromfile(deploy_file)
    if args.shape is not None:
        deploy_cfg.onnx_config.input_shape = [args.shape[1], args.shape[0]]  # MMDeploy's (W, H)
    out = output_path(args)
    # MMDeploy loads the weights through mmengine, where mmelsa checks that they fit the model
    fit = partial_load() if args.allow_partial_load else contextlib.nullcontext()
    with StagedFile(out) as staged:  # onto --out only once converted and compared
        try:
            with fit:
                processor, pytorch_model, ort_model, data = convert_whole_model(
                    cfg, deploy_cfg, args.checkpoint, args.image, staged.partial)
        except (RuntimeError, ValueError) as err:
            cli.fail(str(err).splitlines()[0])
        print(f'exported the whole model to {out} through MMDeploy with {deploy_file} '
              f'({osp.getsize(staged.partial) / 2**20:.1f} MiB)')
        lines, problems = agreement(scope, pytorch_model, ort_model, data, staged.partial,
                                    score_thr=args.score_thr or SCORE_THRESHOLD)
        print('\n'.join(lines))
        if problems:
            fail_comparison(staged, out, problems)
        staged.publish()
    if args.benchmark:
        t_torch, t_ort = end_to_end_latency(pytorch_model, ort_model, data, args.reps)
        print(f'latency end to end, median of {args.reps} runs, {torch.get_num_threads()} '
              f'torch threads: pytorch {t_torch:.1f} ms, onnxruntime {t_ort:.1f} '
              f'ms ({t_torch / t_ort:.2f}x)')


if __name__ == '__main__':
    main()
