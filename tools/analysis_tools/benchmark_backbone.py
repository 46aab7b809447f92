"""ELSA-Swin-T against mmdet's Swin-T: same input, same process, same settings.

Both backbones are built once and timed as interleaved pairs (Swin-T, ELSA-Swin-T, Swin-T, ...),
so a change of load hits both alike; the time ratio is the median of the per-pair ratios. Modes:
  * ``train``: backbone forward + backward (the loss is the sum of the output means),
  * ``infer``: backbone forward in eval mode under ``torch.no_grad()``,
  * ``det-train`` (with ``--detector``): one full Mask R-CNN training step (forward, losses,
    backward, AdamW step) built from mmdet's shipped ``mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``,
    once as shipped and once with only the backbone type swapped, on a synthetic batch.
Peak memory is measured after all timing (the CPU probe changes glibc's allocation threshold, which
would change the timed runs). ``--dtype`` is float32 unless asked (an autocast dtype otherwise;
mmcv's CPU ops take float32 only, so the detector stays float32 on the CPU) and is printed in
every row; ``--threads 1 2`` repeats everything at each thread count.

One-time costs and other runtimes, on request (inference input, float32):
  * ``--onnx``: a plain ``torch.onnx.export`` of each backbone (seconds) and the latency of each
    file in ONNX Runtime (CPU, the same thread count), interleaved;
  * ``--compile``: ``torch.compile(model, dynamic=True)``: the seconds of its first call, each
    model in a fresh process with inductor's caches off (nothing reused from an earlier run),
    stopped after ``--compile-limit`` seconds (printed as "> limit").

Examples:
    python tools/analysis_tools/benchmark_backbone.py --device cuda --batch 2 --size 800 1344 \
        --dtype float16
    python tools/analysis_tools/benchmark_backbone.py --device cpu --batch 1 --size 224 224 \
        --threads 1 2 --reps 10 --onnx --compile
"""
import argparse
import contextlib
import multiprocessing
import os.path as osp
import queue
import statistics
import sys
import tempfile
import time

import torch

from mmelsa.cli import positive_int
from mmelsa.utils.benchmark import CpuPeak, interleaved_times, peak_memory, ratio

SWIN_T = dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
              mlp_ratio=4, qkv_bias=True, drop_path_rate=0.2, patch_norm=True,
              out_indices=(0, 1, 2, 3), convert_weights=False)
NAMES = ('Swin-T', 'ELSA-Swin-T')
TYPES = ('SwinTransformer', 'ELSASwinTransformer')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                   choices=['cpu', 'cuda'])
    p.add_argument('--batch', type=positive_int, default=2)
    p.add_argument('--size', type=positive_int, nargs=2, default=[800, 1344], metavar=('H', 'W'))
    p.add_argument('--dtype', choices=['float32', 'float16', 'bfloat16'], default='float32',
                   help='float32 (default), or run under autocast to this dtype')
    p.add_argument('--threads', type=positive_int, nargs='+', default=None,
                   help='torch thread counts to run at, in turn (default: torch\'s)')
    p.add_argument('--with-cp', action='store_true', help='activation checkpointing in both')
    p.add_argument('--detector', action='store_true', help='also time a Mask R-CNN train step')
    p.add_argument('--modes', nargs='+', choices=['train', 'infer'], default=['train', 'infer'],
                   help='backbone modes to time (default: both)')
    p.add_argument('--onnx', action='store_true',
                   help='export both (plain torch.onnx.export) and time them in ONNX Runtime')
    p.add_argument('--compile', action='store_true',
                   help='time the first call of torch.compile(model, dynamic=True) of both')
    p.add_argument('--compile-limit', type=positive_int, default=1800, metavar='SECONDS',
                   help='stop a first compiled call after this many seconds (default: 1800)')
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


def pair_ratio(times):
    """Median over the pairs of ELSA-Swin-T's time / Swin-T's."""
    return statistics.median(e / w for w, e in zip(*times))


def onnx_rows(models, x, threads):
    """Plain export of each backbone (seconds) and its ONNX Runtime latency (interleaved)."""
    import onnxruntime as ort
    sessions, seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in zip(NAMES, models):
            path = osp.join(tmp, name + '.onnx')
            model.eval()  # (mmdet's Swin.train() returns None: no chaining)
            t0 = time.perf_counter()
            with torch.no_grad():
                torch.onnx.export(model, (x, ), path, dynamo=False, opset_version=17,
                                  input_names=['x'])
            seconds.append(time.perf_counter() - t0)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            sessions.append(ort.InferenceSession(path, opts, providers=['CPUExecutionProvider']))
        feed = {'x': x.cpu().numpy()}
        return seconds, [lambda s=s: s.run(None, feed) for s in sessions]


def _first_compiled_call(type_name, with_cp, shape, device, threads, result):
    """In a child process: put the seconds of the first call of ``torch.compile(model,
    dynamic=True)`` (inference) into ``result``."""
    torch._inductor.config.force_disable_caches = True  # no kernel of an earlier run reused
    torch.set_num_threads(threads)
    model = build_backbone(type_name, with_cp).to(device)
    model.eval()
    torch.manual_seed(0)
    x = torch.randn(shape, device=device)
    compiled = torch.compile(model, dynamic=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        compiled(x)
    result.put(time.perf_counter() - t0)


def compile_seconds(type_name, args, threads, shape):
    """Seconds of the first compiled call of one backbone, in a fresh process; None when it
    ran past ``--compile-limit``. Raises if the process ended without a result."""
    ctx = multiprocessing.get_context('spawn')
    result = ctx.Queue()
    child = ctx.Process(target=_first_compiled_call,
                        args=(type_name, args.with_cp, shape, args.device, threads, result))
    child.start()
    deadline = time.monotonic() + args.compile_limit
    try:
        while time.monotonic() < deadline:
            alive = child.is_alive()  # read before the wait: a result put before exit arrives
            try:
                return result.get(timeout=1)
            except queue.Empty:
                if not alive:
                    raise RuntimeError(
                        f'--compile: the first compiled call of {type_name} failed (its process '
                        f'exited with code {child.exitcode}; its error is printed above)')
        return None
    finally:
        child.terminate()
        child.join()


def compile_ratio(seconds, limit):
    """ELSA-Swin-T's compile time / Swin-T's as text: a bound where one ran past the limit."""
    swin, elsa = seconds
    if swin is None and elsa is None:
        return 'unknown'
    if swin is None:
        return '< %.3f' % (elsa / limit)
    if elsa is None:
        return '> %.3f' % (limit / swin)
    return '%.3f' % (elsa / swin)


def run_at(args, threads, amp, x):
    """Every row at one thread count: (mode, [swin ms, elsa ms], time ratio, [peaks]|None)."""
    torch.set_num_threads(threads)
    models = [build_backbone(t, args.with_cp).to(args.device) for t in TYPES]
    timed = []  # (mode, fns, set-up before each call)
    for mode in args.modes:
        runs = [backbone_runs(m, x, amp)[mode] for m in models]

        def train_mode(mode=mode):
            for m in models:  # mmdet's Swin.train() returns None: no chaining
                m.train(mode == 'train')

        timed.append((mode, runs, train_mode))
    if args.detector:
        timed.append(('det-train', [detector_run(swap, args, amp) for swap in (False, True)],
                      lambda: None))
    rows, peaks, later = [], {}, []
    for mode, fns, prepare in timed:
        prepare()
        times = interleaved_times(fns, args.reps, args.warmup, args.device)
        rows.append([mode, [statistics.median(t) for t in times], pair_ratio(times)])
    if args.onnx:  # before the memory probe, which lowers glibc's mmap threshold for good
        seconds, fns = onnx_rows(models, x.cpu(), threads)
        later.append(['export (s)', seconds, seconds[1] / seconds[0], None])
        times = interleaved_times(fns, args.reps, args.warmup)
        later.append(['onnxruntime', [statistics.median(t) for t in times], pair_ratio(times),
                      None])
    # memory after every timed run: the CPU probe changes the allocator's behaviour
    cpu_peak = CpuPeak() if args.device == 'cpu' else None
    for mode, fns, prepare in timed:
        prepare()
        peaks[mode] = [peak_memory(fn, args.device, cpu_peak) for fn in fns]
    for row in rows:
        row.append(peaks[row[0]])
    rows += later
    if args.compile:
        seconds = [compile_seconds(t, args, threads, tuple(x.shape)) for t in TYPES]
        rows.append(['compile (s)', seconds, compile_ratio(seconds, args.compile_limit), None])
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        sys.exit('--device cuda: no CUDA GPU is visible to torch')

    def amp():
        if args.dtype == 'float32':
            return contextlib.nullcontext()
        return torch.autocast(args.device, dtype=getattr(torch, args.dtype))

    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, *args.size, device=args.device)
    dev = torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'
    print(f'# {dev}, torch {torch.__version__}, batch {args.batch}, '
          f'{args.size[0]}x{args.size[1]}, with_cp={args.with_cp}, median of {args.reps} '
          f'interleaved pairs')
    print('| threads | mode | dtype | Swin-T | ELSA-Swin-T | ratio | Swin-T peak GB | '
          'ELSA-Swin-T peak GB | memory ratio |')
    print('|---|---|---|---|---|---|---|---|---|')
    for threads in args.threads or [torch.get_num_threads()]:
        for mode, (t0, t1), r, peaks in run_at(args, threads, amp, x):
            unit = '' if mode.endswith('(s)') else ' ms'
            dtype = 'float32' if mode in ('onnxruntime', 'export (s)', 'compile (s)') or (
                mode == 'det-train' and args.device == 'cpu') else args.dtype
            mem = '| | |' if peaks is None else '| %.3f | %.3f | %s |' % (
                peaks[0] / 1e9, peaks[1] / 1e9, ratio(peaks[1], peaks[0]))
            t0, t1 = ('> %d' % args.compile_limit if t is None else f'{t:.1f}{unit}'
                      for t in (t0, t1))  # None: a compiled call stopped at the limit
            r = r if isinstance(r, str) else f'{r:.3f}'
            print(f'| {threads} | {mode} | {dtype} | {t0} | {t1} | {r} {mem}', flush=True)


if __name__ == '__main__':
    main()
