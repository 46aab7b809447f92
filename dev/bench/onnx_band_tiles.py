"""The band form's tile size (R rows x T columns) in ONNX Runtime (CPU), at ELSA-Swin-T's shapes.

:func:`mmelsa.ops.onnx_bands.elsa_band_form_channels_last` (softmax of the logits included) is
exported once per tile size (TorchScript, opset 17), checked against the float64 reference and
timed; the sessions run in turn, ``--reps`` rounds, with ONNX Runtime's thread spinning off
(several sessions of one process otherwise take turns at each other's spinning threads, which
on a machine of few cores moved a session's time by half). docs/benchmarks.md records a run.

    python dev/bench/onnx_band_tiles.py --threads 2
"""
import argparse
import statistics
import time

import onnxruntime as ort
import torch

from mmelsa.cli import positive_int
from mmelsa.ops import onnx_bands
from mmelsa.ops.reference import elsa_reference
from onnx_export_forms import session  # dev/bench, beside this script

K = 7
#: name: (channels C, heads G, map side) of ELSA-Swin-T's first three stages at 512 x 512
CASES = {'s1': (96, 3, 128), 's2': (192, 6, 64), 's3': (384, 12, 32)}


def tile(text):
    rows, cols = text.split('x')
    return positive_int(rows), positive_int(cols)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--tiles', type=tile, nargs='+', metavar='RxT',
                   default=[(1, 8), (1, 16), (2, 8), (4, 8), (8, 8), (4, 4), (4, 16)])
    p.add_argument('--cases', nargs='+', choices=sorted(CASES), default=sorted(CASES))
    p.add_argument('--threads', type=positive_int, default=2)
    p.add_argument('--reps', type=positive_int, default=20)
    p.add_argument('--shape', type=positive_int, nargs=3, metavar=('C', 'G', 'SIDE'),
                   help='one case of this shape instead of --cases')
    return p.parse_args(argv)


class BandSum(torch.nn.Module):

    def __init__(self, heads):
        super().__init__()
        self.heads = heads

    def forward(self, x, logits):
        return onnx_bands.elsa_band_form_channels_last(x, logits, self.heads, None, K, 1,
                                                       attn_is_logits=True)


def tile_session(tile_size, heads, inputs, threads):
    """A session on the band sum exported with ``tile_size`` (R, T) tiles, spinning off."""
    saved = onnx_bands.ROWS, onnx_bands.COLUMNS
    onnx_bands.ROWS, onnx_bands.COLUMNS = tile_size
    try:
        return session(BandSum(heads), inputs, ['x', 'logits'], threads, spinning=False)
    finally:
        onnx_bands.ROWS, onnx_bands.COLUMNS = saved


def main(argv=None):
    args = parse_args(argv)
    print(f'# ONNX Runtime {ort.__version__}, {args.threads} thread(s), batch 1, K {K}, '
          f'float32, median of {args.reps} interleaved rounds, spinning off')
    print('| case | (C, G, side) | tile R x T | ms | / first tile | max abs err vs float64 |')
    print('|---|---|---|---|---|---|')
    cases = {'custom': tuple(args.shape)} if args.shape else {c: CASES[c] for c in args.cases}
    for name, (C, G, side) in cases.items():
        torch.manual_seed(0)
        x = torch.randn(1, side, side, C)
        logits = torch.randn(1, side, side, G * K * K)
        ref = elsa_reference(x.double().permute(0, 3, 1, 2),
                             logits.double().reshape(1, side, side, G, K * K)
                             .permute(0, 3, 4, 1, 2).softmax(2), None, None, K, 1, 1)
        ref = ref.permute(0, 2, 3, 1)
        feed = {'x': x.numpy(), 'logits': logits.numpy()}
        sessions, errors = {}, {}
        for size in args.tiles:
            sess = tile_session(size, G, (x, logits), args.threads)
            err = (torch.from_numpy(sess.run(None, feed)[0]).double() - ref).abs().max().item()
            if err > 1e-4 * max(1.0, ref.abs().max().item()):
                raise SystemExit(f'tile {size} disagrees with the reference at {name}: {err:.2e}')
            sessions[size], errors[size] = sess, err
        times = {size: [] for size in sessions}
        for round_ in range(3 + args.reps):
            for size, sess in sessions.items():
                t0 = time.perf_counter()
                sess.run(None, feed)
                if round_ >= 3:  # warm-up rounds
                    times[size].append((time.perf_counter() - t0) * 1e3)
        base = None
        for size, t in times.items():
            ms = statistics.median(t)
            base = base or ms
            print(f'| {name} | ({C}, {G}, {side}) | {size[0]} x {size[1]} | {ms:.2f} | '
                  f'{ms / base:.2f} | {errors[size]:.1e} |', flush=True)


if __name__ == '__main__':
    main()
