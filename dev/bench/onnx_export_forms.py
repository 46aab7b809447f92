"""Candidate ONNX spellings of one fused softmax + ELSA call, timed in ONNX Runtime (CPU).

Each form is exported with the TorchScript exporter (opset 17) at one shape of ELSA-Swin-T at
224 x 224, checked against the float64 reference, and timed; the table gives each form's time
against the tap form's (docs/benchmarks.md records runs). The call is ELSA-Swin-T's: no
multiplicative ghost (``--ghost-mul`` adds one; the band form cannot take it and is left out),
and no additive ghost, which every form adds as the same depth-wise convolution.

* ``taps``: :func:`mmelsa.ops.onnx.elsa_export_form` with ``form='taps'`` (K*K Slice / Mul /
  Add taps over channel chunks, softmax normalised after the sum);
* ``bands``: the same with ``form='bands'`` (:mod:`mmelsa.ops.onnx_bands`: one Gather, two
  batched MatMuls), the default where it applies;
* ``one-hot conv``: all K*K shifted copies of x from one grouped convolution whose fixed
  weights are one-hot (the multiplicative ghost folded into them), then one Mul with the
  attention and one ReduceSum over the taps;
* ``row bands``: the same per kernel row: one 1 x K grouped convolution per row makes that
  row's K copies, then Mul, ReduceSum and an Add per row;
* ``deform conv``: ONNX's one operator that fuses the sum, DeformConv (opset 19, so this form
  alone is exported at 19): a depth-wise convolution whose taps are scaled per pixel by a
  mask, one mask per group of channels (``offset_group`` = G heads), with zero offsets and
  weights of ones (or the multiplicative ghost); the mask is the softmaxed attention.

    python dev/bench/onnx_export_forms.py --threads 2
"""
import argparse
import io
import statistics
import time

import onnxruntime as ort
import torch
import torch.nn.functional as F
import torchvision

from mmelsa.cli import positive_int
from mmelsa.ops.onnx import elsa_export_form
from mmelsa.ops.reference import elsa_reference

K = 7
#: name: (channels C, heads G, map side) of ELSA-Swin-T's stages at 224 x 224
CASES = {'s1': (96, 3, 56), 's2': (192, 6, 28), 's3': (384, 12, 14)}


class Taps(torch.nn.Module):
    form = 'taps'

    def __init__(self, channels, ghost_mul):
        super().__init__()
        self.register_buffer('ghost_mul', ghost_mul)

    def forward(self, x, logits):
        return elsa_export_form(x, logits, self.ghost_mul, None, K, 1, 1, attn_is_logits=True,
                                form=self.form)


class Bands(Taps):
    form = 'bands'


class OneHotConv(torch.nn.Module):

    def __init__(self, C, ghost_mul):
        super().__init__()
        ghost_mul = torch.ones(C, K, K) if ghost_mul is None else ghost_mul
        one_hot = torch.eye(K * K).reshape(1, K * K, 1, K, K)
        self.register_buffer('weight', (one_hot * ghost_mul.reshape(C, K * K, 1, 1, 1))
                             .reshape(C * K * K, 1, K, K))

    def forward(self, x, logits):
        B, C, H, W = x.shape
        G = logits.shape[1]
        copies = F.conv2d(x, self.weight, padding=K // 2, groups=C)
        copies = copies.reshape(B, G, C // G, K * K, H, W)
        return (copies * logits.softmax(2).unsqueeze(2)).sum(3).reshape(B, C, H, W)


class RowBands(torch.nn.Module):

    def __init__(self, C, ghost_mul):
        super().__init__()
        ghost_mul = torch.ones(C, K, K) if ghost_mul is None else ghost_mul
        one_hot = torch.eye(K).reshape(1, K, 1, 1, K)
        for u in range(K):
            self.register_buffer('row%d' % u, (one_hot * ghost_mul[:, u].reshape(C, K, 1, 1, 1))
                                 .reshape(C * K, 1, 1, K))

    def forward(self, x, logits):
        B, C, H, W = x.shape
        G = logits.shape[1]
        attn = logits.softmax(2).reshape(B, G, 1, K, K, H, W)
        xp = F.pad(x, (K // 2, ) * 4)
        total = None
        for u in range(K):
            copies = F.conv2d(xp[:, :, u:u + H], getattr(self, 'row%d' % u), groups=C)
            term = (copies.reshape(B, G, C // G, K, H, W) * attn[:, :, :, u]).sum(3)
            total = term if total is None else total + term
        return total.reshape(B, C, H, W)


class _DeformConvCall(torch.autograd.Function):
    """torchvision's deform_conv2d with zero offsets; exported as one ONNX DeformConv."""

    @staticmethod
    def forward(ctx, x, weight, offset, mask):
        return torchvision.ops.deform_conv2d(x, offset, weight, padding=K // 2, mask=mask)

    @staticmethod
    def symbolic(g, x, weight, offset, mask):
        channels, heads = weight.type().sizes()[0], mask.type().sizes()[1] // (K * K)
        bias = g.op('Constant', value_t=torch.zeros(channels))
        return g.op('DeformConv', x, weight, offset, bias, mask, group_i=channels,
                    offset_group_i=heads, kernel_shape_i=[K, K], pads_i=[K // 2] * 4)


class DeformConv(torch.nn.Module):
    opset = 19

    def __init__(self, C, ghost_mul):
        super().__init__()
        ghost_mul = torch.ones(C, K, K) if ghost_mul is None else ghost_mul
        self.register_buffer('weight', ghost_mul.reshape(C, 1, K, K).clone())

    def forward(self, x, logits):
        B, G, _, H, W = logits.shape
        mask = logits.softmax(2).reshape(B, G * K * K, H, W)
        offset = torch.zeros(B, 2 * G * K * K, H, W, dtype=x.dtype)
        return _DeformConvCall.apply(x, self.weight, offset, mask)


FORMS = {'taps': Taps, 'bands': Bands, 'one-hot conv': OneHotConv, 'row bands': RowBands,
         'deform conv': DeformConv}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--cases', nargs='+', choices=sorted(CASES), default=sorted(CASES))
    p.add_argument('--batch', type=positive_int, default=1)
    p.add_argument('--threads', type=positive_int, default=1)
    p.add_argument('--reps', type=positive_int, default=20)
    p.add_argument('--shape', type=positive_int, nargs=3, metavar=('C', 'G', 'SIDE'),
                   help='one case of this shape instead of --cases')
    p.add_argument('--ghost-mul', action='store_true',
                   help='with a multiplicative ghost (not ELSA-Swin-T\'s; no band form)')
    return p.parse_args(argv)


def session(module, inputs, names, threads, spinning=True):
    """An ONNX Runtime session on ``module`` exported at ``inputs`` (TorchScript; opset 17
    unless the module names its own ``opset``); ``spinning=False`` turns off its worker
    threads' spinning, for sessions run in turn in one process."""
    f = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, inputs, f, dynamo=False, input_names=names,
                          opset_version=getattr(module, 'opset', 17))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return ort.InferenceSession(f.getvalue(), opts, providers=['CPUExecutionProvider'])


def median_ms(sess, feed, reps):
    """Median milliseconds of ``reps`` runs after 3 warm-up runs."""
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv=None):
    args = parse_args(argv)
    cases = {'custom': tuple(args.shape)} if args.shape else {c: CASES[c] for c in args.cases}
    forms = {name: cls for name, cls in FORMS.items()
             if not (args.ghost_mul and name == 'bands')}
    print(f'# ONNX Runtime {ort.__version__}, {args.threads} thread(s), batch {args.batch}, '
          f'K {K}, median of {args.reps}, ghost_mul {"yes" if args.ghost_mul else "no"}')
    print('| case | (C, G, side) | form | ms | / taps | max abs err vs float64 |')
    print('|---|---|---|---|---|---|')
    for name, (C, G, side) in cases.items():
        torch.manual_seed(0)
        x = torch.randn(args.batch, C, side, side)
        logits = torch.randn(args.batch, G, K * K, side, side)
        ghost_mul = torch.randn(C, K, K) if args.ghost_mul else None
        ref = elsa_reference(x.double(), logits.double().softmax(2),
                             None if ghost_mul is None else ghost_mul.double(), None, K, 1, 1)
        feed = {'x': x.numpy(), 'logits': logits.numpy()}
        base = None
        for form, cls in forms.items():
            sess = session(cls(C, ghost_mul), (x, logits), ['x', 'logits'], args.threads)
            err = (torch.from_numpy(sess.run(None, feed)[0]).double() - ref).abs().max().item()
            if err > 1e-4 * max(1.0, ref.abs().max().item()):
                raise SystemExit(f'{form} disagrees with the reference at {name}: {err:.2e}')
            ms = median_ms(sess, feed, args.reps)
            base = base or ms
            print(f'| {name} | ({C}, {G}, {side}) | {form} | {ms:.2f} | {ms / base:.2f} | '
                  f'{err:.1e} |', flush=True)


if __name__ == '__main__':
    main()
