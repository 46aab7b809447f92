"""ELSA-Swin-T against mmdet's Swin-T: same input, same run, same settings.

For each model it times (median of --reps after --warmup) and measures the peak memory of:
  * ``train``: backbone forward + backward under AMP (the loss is the sum of the output means),
  * ``infer``: backbone forward in eval mode under AMP and ``torch.no_grad()``,
  * ``det-train`` (with ``--detector``): one full Mask R-CNN training step (forward, losses,
    backward, AdamW step) built from mmdet's shipped ``mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``,
    once as shipped and once with only the backbone type swapped, on a synthetic batch
    (AMP on CUDA only: mmcv's CPU ops accept float32 alone).
and prints a table with the ELSA-Swin / Swin ratios.

Examples:
    python tools/analysis_tools/benchmark_backbone.py --device cuda --batch 2 --size 800 1344
    python tools/analysis_tools/benchmark_backbone.py --device cpu --batch 1 --size 224 224 \
        --reps 3 --warmup 1 --detector
"""
import argparse
import contextlib
import os.path as osp
import sys

import torch

from mmelsa.cli import positive_int
from mmelsa.utils.benchmark import CpuPeak, peak_memory, ratio, time_fn

SWIN_T = dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
              mlp_ratio=4, qkv_bias=True, drop_path_rate=0.2, patch_norm=True,
              out_indices=(0, 1, 2, 3), convert_weights=False)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                   choices=['cpu', 'cuda'])
    p.add_argument('--batch', type=positive_int, default=2)
    p.add_argument('--size', type=positive_int, nargs=2, default=[800, 1344], metavar=('H', 'W'))
    p.add_argument('--amp-dtype', choices=['float16', 'bfloat16', 'none'], default=None,
                   help='autocast dtype (default: float16 on CUDA, bfloat16 on CPU)')
    p.add_argument('--with-cp', action='store_true', help='activation checkpointing in both')
    p.add_argument('--detector', action='store_true', help='also time a Mask R-CNN train step')
    p.add_argument('--modes', nargs='+', choices=['train', 'infer'], default=['train', 'infer'],
                   help='backbone modes to time (default: both)')
    p.add_argument('--reps', type=positive_int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    return p.parse_args(argv)


def build_backbone(type_name, with_cp):
    import mmelsa  # noqa: F401  (registers ELSASwinTransformer into mmdet's MODELS)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return MODELS.build(dict(type=type_name, with_cp=with_cp, **SWIN_T))


def backbone_runs(model, x, amp):
    """The 'train' and 'infer' callables of one backbone."""

    def train():
        with amp():
            loss = sum(out.float().mean() for out in model(x))
        loss.backward()
        model.zero_grad(set_to_none=True)

    def infer():  # eval mode: no stochastic depth, as a deployed model runs
        with torch.no_grad(), amp():
            model(x)

    return dict(train=train, infer=infer)


def detector_run(swap, args, amp):
    """One Mask R-CNN training step (mmdet's Swin-T config, backbone optionally swapped)."""
    import mmdet
    import numpy as np
    from mmengine.config import Config
    from mmengine.structures import InstanceData
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks

    cfg = Config.fromfile(osp.join(mmdet.__path__[0], '.mim', 'configs', 'swin',
                                   'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None  # nothing to download
    cfg.model.backbone.with_cp = args.with_cp
    if swap:
        import mmelsa  # noqa: F401
        cfg.model.backbone.type = 'ELSASwinTransformer'
    model = MODELS.build(cfg.model).to(args.device)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)

    H, W = args.size
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(args.batch):
        inputs.append(torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8))
        xy = torch.rand(4, 2, generator=g) * torch.tensor([W * 0.6, H * 0.6])
        wh = 32 + torch.rand(4, 2, generator=g) * torch.tensor([W * 0.3, H * 0.3])
        boxes = torch.cat([xy, xy + wh], 1)
        masks = np.zeros((4, H, W), np.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.round().int().tolist()):
            m[y1:y2, x1:x2] = 1
        s = DetDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W),
                                        pad_shape=(H, W), scale_factor=(1., 1.)))
        labels = torch.randint(0, 80, (4, ), generator=g)
        s.gt_instances = InstanceData(bboxes=boxes, labels=labels,
                                      masks=BitmapMasks(masks, H, W))
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)

    def step():
        # mmcv's CPU ops (nms, roi_align) take float32 only: AMP for the detector on CUDA alone
        with amp() if args.device == 'cuda' else contextlib.nullcontext():
            losses = model(**data, mode='loss')
        loss = sum(v.float() if torch.is_tensor(v) else sum(v) for k, v in losses.items()
                   if 'loss' in k)
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    return step


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        sys.exit('--device cuda: no CUDA GPU is visible to torch')
    amp_dtype = args.amp_dtype or ('float16' if args.device == 'cuda' else 'bfloat16')

    def amp():
        if amp_dtype == 'none':  # fp32 (torch has no dtype named 'none' to look up)
            return torch.autocast(args.device, enabled=False)
        return torch.autocast(args.device, dtype=getattr(torch, amp_dtype))

    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, *args.size, device=args.device)
    cpu_peak = CpuPeak()
    rows = {}
    for name, type_name in (('Swin-T', 'SwinTransformer'), ('ELSA-Swin-T', 'ELSASwinTransformer')):
        model = build_backbone(type_name, args.with_cp).to(args.device)
        for mode, fn in backbone_runs(model, x, amp).items():
            if mode not in args.modes:
                continue
            # (mmdet's Swin.train() returns None: no chaining)
            model.train(mode == 'train')
            ms = time_fn(fn, args.device, args.reps, args.warmup)
            rows[name, mode] = (ms, peak_memory(fn, args.device, cpu_peak))
            print(f'{name:12s} {mode:9s} {ms:9.2f} ms', flush=True)
        del model
        if args.detector:
            step = detector_run(name != 'Swin-T', args, amp)
            ms = time_fn(step, args.device, args.reps, args.warmup)
            rows[name, 'det-train'] = (ms, peak_memory(step, args.device, cpu_peak))
            print(f'{name:12s} det-train {ms:9.2f} ms', flush=True)
            del step

    dev = torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'
    print(f'\n# {dev}, torch {torch.__version__}, batch {args.batch}, '
          f'{args.size[0]}x{args.size[1]},'
          f' AMP {amp_dtype}, with_cp={args.with_cp}, median of {args.reps}')
    print('| mode | Swin-T ms | ELSA-Swin-T ms | time ratio | Swin-T peak GB | '
          'ELSA-Swin-T peak GB | memory ratio |')
    print('|---|---|---|---|---|---|---|')
    for mode in ('train', 'infer', 'det-train'):
        if ('Swin-T', mode) not in rows:
            continue
        (t0, m0), (t1, m1) = rows['Swin-T', mode], rows['ELSA-Swin-T', mode]
        print(f'| {mode} | {t0:.1f} | {t1:.1f} | {ratio(t1, t0)} | {m0 / 1e9:.3f} | '
              f'{m1 / 1e9:.3f} | {ratio(m1, m0)} |')


if __name__ == '__main__':
    main()
