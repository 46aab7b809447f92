"""ELSA's grouped K x K convolution in ONNX Runtime (CPU): exported as it is, and exported as
:class:`mmelsa.models.grouped_conv.GroupedConv2d` does (one depth-wise convolution over the
groups' rotated channel orders, then a ReduceSum). Each is checked against the float64
convolution and timed; docs/benchmarks.md records a run.

    python dev/bench/onnx_grouped_conv.py --threads 2
"""
import argparse
import onnxruntime as ort
import torch
import torch.nn.functional as F

from mmelsa.cli import positive_int
from mmelsa.models.grouped_conv import GroupedConv2d
from mmelsa.ops.reference import max_rel_err
from onnx_export_forms import median_ms, session  # dev/bench, beside this script

#: name: (channels, map side) of ELSA-Swin-T's attention branches at 224 x 224 and 512 x 512
CASES = {'s1': (64, 56), 's2': (128, 28), 's3': (256, 14), 's1-512': (64, 128),
         's2-512': (128, 64)}


class AsGrouped(torch.nn.Module):
    """The same weights through a plain nn.Conv2d: the grouped Conv node."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return F.conv2d(x, self.conv.weight, self.conv.bias, self.conv.stride, self.conv.padding,
                        self.conv.dilation, self.conv.groups)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--cases', nargs='+', choices=sorted(CASES), default=list(CASES))
    p.add_argument('--group-width', type=positive_int, default=4, help="ELSA-Swin's: 4")
    p.add_argument('--threads', type=positive_int, default=2)
    p.add_argument('--reps', type=positive_int, default=20)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    print(f'# ONNX Runtime {ort.__version__}, {args.threads} thread(s), K 7, group width '
          f'{args.group_width}, median of {args.reps}')
    print('| case | (C, side) | grouped Conv ms | depth-wise form ms | ratio | max rel err |')
    print('|---|---|---|---|---|---|')
    for name in args.cases:
        C, side = CASES[name]
        torch.manual_seed(0)
        conv = GroupedConv2d(C, C, 7, padding=3, groups=C // args.group_width).eval()
        x = torch.randn(1, C, side, side)
        expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), 1, 3, 1,
                            conv.groups)
        ms, err = [], 0.0
        for module in (AsGrouped(conv), conv):
            sess = session(module, (x, ), ['x'], args.threads)
            feed = {'x': x.numpy()}
            got = torch.from_numpy(sess.run(None, feed)[0])
            err = max(err, max_rel_err(got, expected))
            if err > 1e-5:
                raise SystemExit(f'{name}: an export disagrees with the convolution ({err:.1e})')
            ms.append(median_ms(sess, feed, args.reps))
        print(f'| {name} | ({C}, {side}) | {ms[0]:.2f} | {ms[1]:.2f} | {ms[1] / ms[0]:.2f} | '
              f'{err:.1e} |', flush=True)


if __name__ == '__main__':
    main()
