"""Convert a whole ELSA-Swin detector or segmenter with MMDeploy to ONNX Runtime, and compare.

The whole model, post-processing included (a detector's RPN, NMS and RoI heads; a segmenter's
decode head), which a plain torch.onnx.export cannot trace (see tools/deployment/pytorch2onnx.py
for the backbone / tensor-mode export). Converts with the deploy config (default: ours in
configs/mmdeploy/ for the model's task), runs ONNX Runtime and PyTorch on one image and prints
their agreement: a detector's detections (count, largest box / score difference over the
leading ones, labels, mask IoU), a segmenter's argmax agreement on the raw logits; with
--benchmark the median
latency of both, end to end (preprocessing, model, post-processing).

Example:
    python tools/deployment/mmdeploy2onnx.py \\
        configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py work_dirs/det.pth \\
        --image data/toy_coco/val/000000.jpg --work-dir work_dirs/mmdeploy_det --benchmark
"""
import argparse
import os
import os.path as osp

from mmelsa import cli
from mmelsa.cli.preflight import UsageError, load_config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_DEPLOY = {
    'mmdet': 'configs/mmdeploy/instance-seg_onnxruntime_dynamic.py',
    'mmseg': 'configs/mmdeploy/segmentation_onnxruntime_static-192x192.py',
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config', help='mmdet / mmseg config with an ELSASwinTransformer backbone')
    p.add_argument('checkpoint', nargs='?', default=None,
                   help='checkpoint to load (default: the config\'s initialisation)')
    p.add_argument('--deploy-cfg', default=None,
                   help='MMDeploy deploy config (default: configs/mmdeploy/ for the task)')
    p.add_argument('--image', required=True, help='image to trace and compare on')
    p.add_argument('--work-dir', required=True, help='folder for end2end.onnx')
    p.add_argument('--top', type=int, default=15,
                   help='detections compared one to one, in score order (default 15)')
    p.add_argument('--benchmark', action='store_true',
                   help='also print the median end-to-end latency of ONNX Runtime and PyTorch')
    p.add_argument('--reps', type=int, default=10, help='timed runs for --benchmark')
    return p.parse_args(argv)


def initialisation_checkpoint(cfg, deploy_cfg, path):
    """Save the config's initialisation (seed 0) to ``path``; returns ``path``."""
    import torch
    from mmdeploy.apis.utils import build_task_processor
    from mmengine.config import Config

    import mmelsa  # noqa: F401
    torch.manual_seed(0)
    processor = build_task_processor(cfg, Config.fromfile(deploy_cfg), 'cpu')
    torch.save({'state_dict': processor.build_pytorch_model(None).state_dict()}, path)
    return path


def main(argv=None):
    args = parse_args(argv)
    try:
        for name, path in (('checkpoint', args.checkpoint), ('image', args.image),
                           ('--deploy-cfg', args.deploy_cfg)):
            if path and not osp.isfile(path):
                raise UsageError(f'{name} not found: {path}')
        if args.reps < 1 or args.top < 1:
            raise UsageError('--reps and --top must be >= 1')
        cfg = load_config(args.config)
        scope = cfg.get('default_scope', 'mmdet')
        if scope not in DEFAULT_DEPLOY:
            raise UsageError(f'{args.config}: default_scope must be mmdet or mmseg, got {scope}')
    except UsageError as err:
        cli.fail(str(err))
    deploy_cfg = args.deploy_cfg or osp.join(REPO, DEFAULT_DEPLOY[scope])

    import torch

    from mmelsa.deployment import OnnxRunner, median_latency
    from mmelsa.deployment.mmdeploy_export import build_models, mmdeploy_convert
    os.makedirs(args.work_dir, exist_ok=True)
    checkpoint = args.checkpoint
    if checkpoint is None:
        # one initialisation for both the conversion and the comparison (each would otherwise
        # draw its own random weights)
        checkpoint = initialisation_checkpoint(cfg, deploy_cfg,
                                               osp.join(args.work_dir, 'initialisation.pth'))
    try:
        onnx_file = mmdeploy_convert(cfg, deploy_cfg, checkpoint, args.image,
                                     args.work_dir)
    except (RuntimeError, ValueError) as err:
        cli.fail(str(err).splitlines()[0])
    print(f'converted {args.config} with {deploy_cfg} to {onnx_file} '
          f'({osp.getsize(onnx_file) / 2**20:.1f} MiB)')
    processor, pytorch_model, ort_model = build_models(cfg, deploy_cfg, checkpoint, onnx_file)
    from mmdeploy.utils import get_input_shape
    data, _ = processor.create_input(args.image, get_input_shape(deploy_cfg))
    with torch.no_grad():
        expected = pytorch_model.test_step(data)[0]
        got = ort_model.test_step(data)[0]
    if scope == 'mmdet':
        e, g = expected.pred_instances, got.pred_instances
        n = min(args.top, len(e), len(g))
        print(f'detections: pytorch {len(e)}, onnxruntime {len(g)}; leading {n} compared')
        if n:
            box = float((e.bboxes[:n] - g.bboxes[:n]).abs().max())
            score = float((e.scores[:n] - g.scores[:n]).abs().max())
            labels = bool(torch.equal(e.labels[:n], g.labels[:n]))
            print(f'max |box diff| {box:.3e} px, max |score diff| {score:.3e}, '
                  f'labels equal: {labels}')
            if 'masks' in e and 'masks' in g:
                me, mg = e.masks[:n].bool(), g.masks[:n].bool()
                inter = (me & mg).flatten(1).sum(1)
                union = (me | mg).flatten(1).sum(1)
                iou = torch.where(union > 0, inter / union.clamp(min=1), 1.)
                print(f'mask IoU: min {float(iou.min()):.4f}, mean {float(iou.mean()):.4f}')
    else:  # the raw logits, at the input size (what MMDeploy's graph returns)
        x = pytorch_model.data_preprocessor(data, False)['inputs']
        with torch.no_grad():
            e = torch.nn.functional.interpolate(
                pytorch_model(x, mode='tensor'), size=x.shape[2:], mode='bilinear',
                align_corners=pytorch_model.decode_head.align_corners)
        g = torch.from_numpy(OnnxRunner(onnx_file)(x)[0])
        agree = float((e.argmax(1) == g.argmax(1)).float().mean())
        print(f'logits {tuple(e.shape)}: argmax agreement {agree * 100:.3f}%, max '
              f'|onnxruntime - pytorch| {float((e - g).abs().max()):.3e}')
    if args.benchmark:
        def run(model):
            with torch.no_grad():
                model.test_step(data)

        t_torch = median_latency(lambda: run(pytorch_model), reps=args.reps)
        t_ort = median_latency(lambda: run(ort_model), reps=args.reps)
        print(f'latency end to end, median of {args.reps} runs, {torch.get_num_threads()} '
              f'torch threads: pytorch {t_torch * 1e3:.1f} ms, onnxruntime {t_ort * 1e3:.1f} '
              f'ms ({t_torch / t_ort:.2f}x)')


if __name__ == '__main__':
    main()
