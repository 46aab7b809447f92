"""Benchmark DDF: the operator against an unfold computation and a depth-wise convolution of
the same kernel size, and DDF-ResNet-50 against ResNet-50.

Operator table (``--part op``): for each case (DDF-ResNet-50's stage shapes at K = 3, and one
stage-1 shape at K = 3, 5, 7, 9, where depth-wise convolutions were found faster as K grows),
``mmelsa.ops.ddf`` (combine 'mul', one head), the same filters applied through ``F.unfold`` (a
(B, C, K*K, Ho, Wo) temporary, as a pure-PyTorch DDF would) and ``F.conv2d`` depth-wise with a
static K x K filter per channel (no dynamic filter at all: the cost floor DDF is compared with):
median milliseconds of the forward (no autograd) and of forward + backward (gradients of every
input), and the peak memory each call needs beyond its inputs. The three are timed in turn,
call by call, in one process, so that load changes on a shared machine hit them alike.

Model table (``--part model``): DDF-ResNet-50 (mul) and mmpretrain's ResNet-50 classifiers:
parameters, FLOPs at 224 x 224 (mmengine's FlopAnalyzer, one fused multiply-add = one FLOP,
the DDF operator counted by mmelsa's rule) and CPU inference latency (batch 1, interleaved).

Examples:
    python tools/analysis_tools/benchmark_ddf.py --threads 2
    python tools/analysis_tools/benchmark_ddf.py --part op --reps 5 --batch 4
"""
import argparse

import torch
import torch.nn.functional as F

from mmelsa.cli import positive_int
from mmelsa.ops import ddf
from mmelsa.utils.benchmark import CpuPeak, ratio, time_interleaved

# name: (C, H, W, K, stride) at batch --batch
OP_CASES = {
    's1 K3': (64, 56, 56, 3, 1),
    's2 K3 stride 2': (128, 56, 56, 3, 2),
    's3 K3': (256, 14, 14, 3, 1),
    's1 K5': (64, 56, 56, 5, 1),
    's1 K7': (64, 56, 56, 7, 1),
    's1 K9': (64, 56, 56, 9, 1),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--part', choices=['op', 'model', 'all'], default='all')
    p.add_argument('--batch', type=positive_int, default=8, help='operator cases (default 8)')
    p.add_argument('--reps', type=positive_int, default=10, help='timed rounds (median)')
    p.add_argument('--threads', type=positive_int, default=None,
                   help='torch.set_num_threads (default: torch\'s)')
    return p.parse_args(argv)


def unfold_ddf(x, cf, sf, K, stride):
    """DDF-mul through F.unfold (one head, zero padding K // 2): the pure-PyTorch way."""
    B, C = x.shape[:2]
    Ho, Wo = sf.shape[2:]
    cols = F.unfold(x, K, padding=K // 2, stride=stride).view(B, C, K * K, Ho, Wo)
    return (cols * cf.reshape(B, C, K * K, 1, 1) * sf.unsqueeze(1)).sum(2)


def op_rows(batch, reps):
    peak = CpuPeak()
    rows = ['| case (B, C, H, W) | dir | DDF ms | unfold ms | dw-conv ms | DDF / unfold | '
            'DDF / dw-conv | DDF MB | unfold MB | dw-conv MB |',
            '|---|---|---|---|---|---|---|---|---|---|']
    for name, (C, H, W, K, s) in OP_CASES.items():
        gen = torch.Generator().manual_seed(0)
        Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
        x = torch.randn(batch, C, H, W, generator=gen)
        cf = torch.randn(batch, C, K, K, generator=gen)
        sf = torch.randn(batch, K * K, Ho, Wo, generator=gen)
        weight = torch.randn(C, 1, K, K, generator=gen)
        grad = torch.randn(batch, C, Ho, Wo, generator=gen)
        impls = [lambda x, cf, sf, w: ddf(x, cf, sf, K, 1, s, 'mul'),
                 lambda x, cf, sf, w: unfold_ddf(x, cf, sf, K, s),
                 lambda x, cf, sf, w: F.conv2d(x, w, stride=s, padding=K // 2, groups=C)]
        for direction in ('fwd', 'fwd+bwd'):
            calls = []
            for impl in impls:
                leaves = [t.detach().requires_grad_(direction != 'fwd')
                          for t in (x, cf, sf, weight)]
                if direction == 'fwd':
                    def call(impl=impl, leaves=leaves):
                        with torch.no_grad():
                            impl(*leaves)
                else:
                    def call(impl=impl, leaves=leaves):
                        out = impl(*leaves)
                        used = [t for t in leaves if t.grad_fn is None and t.requires_grad]
                        torch.autograd.grad(out, used, grad, allow_unused=True)
                calls.append(call)
            ms = time_interleaved(calls, reps)
            mb = [peak.measure(c) / 2**20 for c in calls]
            rows.append('| %s (%d, %d, %d, %d) | %s | %.2f | %.2f | %.2f | %s | %s | %.0f | %.0f '
                        '| %.0f |' % (name, batch, C, H, W, direction, *ms, ratio(ms[0], ms[1]),
                                      ratio(ms[0], ms[2]), *mb))
    return rows


def model_rows(reps):
    import mmelsa  # noqa: F401  (registers DDFResNet and the operator's FLOPs rule)
    from mmengine.analysis import FlopAnalyzer
    from mmpretrain.registry import MODELS

    from mmelsa.deployment import TensorModeModel  # the classifier's logits, one tensor
    models = {}
    for label, backbone in (('ResNet-50', dict(type='ResNet', depth=50)),
                            ('DDF-mul-ResNet-50', dict(type='DDFResNet', depth=50))):
        torch.manual_seed(0)
        models[label] = MODELS.build(dict(
            type='ImageClassifier', backbone=backbone, neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048))).eval()
    x = torch.randn(1, 3, 224, 224)
    rows = ['| model | params (M) | GFLOPs | CPU ms (1 x 224) |', '|---|---|---|---|']
    with torch.no_grad():
        calls = [lambda m=m: m(x, mode='tensor') for m in models.values()]
        ms = time_interleaved(calls, reps)
        for (label, model), t in zip(models.items(), ms):
            params = sum(p.numel() for p in model.parameters()) / 1e6
            flops = FlopAnalyzer(TensorModeModel(model, 'model'),
                                 (x, )).unsupported_ops_warnings(False)
            rows.append('| %s | %.1f | %.2f | %.1f |' % (label, params, flops.total() / 1e9, t))
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print('torch %s, %d threads, float32, CPU' % (torch.__version__, torch.get_num_threads()))
    if args.part in ('op', 'all'):
        print('\n'.join(op_rows(args.batch, args.reps)))
    if args.part in ('model', 'all'):
        print()
        print('\n'.join(model_rows(args.reps)))


if __name__ == '__main__':
    main()
