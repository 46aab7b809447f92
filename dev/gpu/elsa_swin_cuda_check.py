"""ELSA-Swin-T on CUDA against a CPU float64 reference, and run-to-run reproducibility.

For a GPU machine (dev/gpu/gpu_run.sh, stage ``correctness``). Checks, each printed as one
line with its number and PASS / FAIL / INFO:

1. fp32 on CUDA (TF32 off) against the same weights in float64 on the CPU, where the ELSA
   operator is the pure-PyTorch unfold reference (``mmelsa/ops/reference.py``) instead of the
   native kernels: the four stage outputs, the input gradient and every parameter gradient of a
   random linear functional of the outputs, by ||a - r|| / ||r|| (float32 lands far under
   1e-3). Fresh random inputs (seeded by --seed), never zeros.
2. The same forward under autocast fp16 and bf16, against the float64 reference (looser).
3. Bitwise reproducibility: the native operator alone, forward and backward on a Swin-T stage
   shape, twice: it has no atomics by design, so the results must be identical (PASS/FAIL).
   The whole fp32 model forward + backward twice with torch's deterministic algorithms on
   (cuDNN, cuBLAS workspace): must be identical too (PASS/FAIL). And twice with torch's
   defaults (INFO: torch's own scatter-add in the Swin stage's position-bias gradient uses
   atomics, so differences there are torch's, not the operator's).

Exit status 1 if any PASS/FAIL check fails.

    python3 dev/gpu/elsa_swin_cuda_check.py [--size 256 320] [--batch 2] [--seed 0]
"""
import argparse
import copy
import os
import sys
import warnings

# cuBLAS needs this before CUDA is initialised to be deterministic (torch's documentation).
os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')

import torch  # noqa: E402

import mmelsa.ops  # noqa: E402
from mmelsa.models import ELSASwinTransformer  # noqa: E402
from mmelsa.ops import elsa_attention  # noqa: E402
from mmelsa.ops.reference import elsa_reference  # noqa: E402

failures = []


def report(name, value, tol, strict=True):
    ok = value == value and value <= tol  # NaN fails
    tag = ('PASS' if ok else 'FAIL') if strict else 'INFO'
    print(f'{tag:4s} {name:58s} {value:10.3e}  (tol {tol:.0e})', flush=True)
    if strict and not ok:
        failures.append(name)


def rel(a, r):
    a, r = a.detach().double().cpu(), r.detach().double().cpu()
    return ((a - r).norm() / r.norm().clamp(min=1e-30)).item()


def build(seed):
    torch.manual_seed(seed)
    # drop_path 0 and no dropout: the forward is a pure function of the weights and the input.
    model = ELSASwinTransformer(arch='tiny', drop_path_rate=0.0)
    model.init_weights()
    # Non-trivial ghost heads, layer norms and biases: the default initialisation leaves some of
    # them at constants that could hide an indexing error.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def run(model, x, weights, amp_dtype=None):
    """Outputs, input gradient and parameter gradients of sum_i <w_i, out_i>."""
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
        outs = model(x)
    loss = sum((o.float() * w).sum() for o, w in zip(outs, weights))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return [o.detach() for o in outs], x.grad.detach(), grads


class reference_op:
    """Inside: the model's ELSA modules call the unfold reference instead of the native op."""

    def __enter__(self):
        self.saved = mmelsa.ops.elsa_attention
        mmelsa.ops.elsa_attention = elsa_reference

    def __exit__(self, *exc):
        mmelsa.ops.elsa_attention = self.saved


def identical(a, b):
    """Names of the tensors that are not bitwise equal between two runs' results."""
    (oa, xa, ga), (ob, xb, gb) = a, b
    bad = [f'out{i}' for i, (p, q) in enumerate(zip(oa, ob)) if not torch.equal(p, q)]
    bad += ['grad_input'] if not torch.equal(xa, xb) else []
    bad += [n for n in ga if not torch.equal(ga[n], gb[n])]
    return bad


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, nargs=2, default=[256, 320], metavar=('H', 'W'))
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'],
                   help='cpu: the same checks with the native CPU kernels (to test this script)')
    args = p.parse_args()
    dev = args.device
    if dev == 'cuda' and not torch.cuda.is_available():
        sys.exit('no CUDA GPU visible')
    if dev == 'cuda' and not mmelsa.ops.info()['with_cuda']:
        sys.exit('mmelsa._ext was built without CUDA (FORCE_CUDA=1 python3 setup.py build_ext '
                 '--inplace)')
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name() if dev == 'cuda' else 'CPU'
    print(f'# {name}, torch {torch.__version__}, ELSA-Swin-T, input '
          f'{args.batch}x3x{args.size[0]}x{args.size[1]}, seed {args.seed}', flush=True)

    model = build(args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 3, *args.size, generator=g)
    with torch.no_grad():
        weights = [torch.randn(o.shape, generator=g) for o in model(x)]

    # 1. fp32 CUDA against the float64 CPU reference (unfold operator).
    ref_model = copy.deepcopy(model).double()
    with reference_op():
        ref = run(ref_model, x.double(), [w.double() for w in weights])
    del ref_model
    cuda_model = copy.deepcopy(model).to(dev)
    xc, wc = x.to(dev), [w.to(dev) for w in weights]
    got = run(cuda_model, xc, wc)
    for i, (a, r) in enumerate(zip(got[0], ref[0])):
        report(f'fp32 {dev} vs fp64 ref: stage {i} output {tuple(a.shape)}', rel(a, r), 1e-4)
    report(f'fp32 {dev} vs fp64 ref: input gradient', rel(got[1], ref[1]), 1e-3)
    worst = sorted(((rel(got[2][n], ref[2][n]), n) for n in ref[2]), reverse=True)
    report(f'fp32 {dev} vs fp64 ref: worst of {len(worst)} parameter gradients', worst[0][0], 1e-3)
    for e, n in worst[:3]:
        print(f'       {n}: {e:.3e}')
    missing = sorted(set(ref[2]) - set(got[2]))
    if missing:
        print(f'FAIL parameters without a {dev} gradient: {missing[:5]}')
        failures.append('missing gradients')

    # 2. autocast forward against the same reference.
    for dt, tol in ((torch.float16, 2e-2), (torch.bfloat16, 5e-2)):
        with torch.no_grad(), torch.autocast(dev, dtype=dt):
            outs = cuda_model(xc)
        for i, (a, r) in enumerate(zip(outs, ref[0])):
            report(f'AMP {str(dt)[6:]} {dev} vs fp64 ref: stage {i} output', rel(a, r), tol)

    # 3a. The native operator alone, twice: no atomics, so bitwise identical.
    B, C, Hs, Ws, G, K = 2, 192, 100, 167, 6, 7  # Swin-T stage 2 at COCO 800x1333
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        gen = torch.Generator().manual_seed(args.seed + 2)
        xs = torch.randn(B, C, Hs, Ws, generator=gen).to(dev, dt)
        att = torch.randn(B, G, K * K, Hs, Ws, generator=gen).softmax(2).to(dev, dt)
        gm = (1 + 0.1 * torch.randn(C, K, K, generator=gen)).to(dev, dt)
        ga = (0.02 * torch.randn(C, K, K, generator=gen)).to(dev, dt)
        gout = torch.randn(B, C, Hs, Ws, generator=gen).to(dev, dt)
        results = []
        for _ in range(2):
            leaves = [t.clone().requires_grad_(True) for t in (xs, att, gm, ga)]
            out = elsa_attention(*leaves, K)
            results.append([out.detach()] + list(torch.autograd.grad(out, leaves, gout)))
        same = all(torch.equal(a, b) for a, b in zip(*results))
        report(f'op {str(dt)[6:]} fwd+bwd twice, (B,C,H,W)=({B},{C},{Hs},{Ws}): differ',
               0.0 if same else 1.0, 0.0)

    # 3b. The whole model twice with deterministic algorithms, then with torch's defaults.
    torch.backends.cudnn.deterministic = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.use_deterministic_algorithms(True, warn_only=True)
        a, b = run(cuda_model, xc, wc), run(cuda_model, xc, wc)
        torch.use_deterministic_algorithms(False)
    for w in {str(w.message).split('.')[0] for w in caught
              if 'deterministic' in str(w.message)}:
        print(f'       torch warned: {w}')
    bad = identical(a, b)
    report('model fp32 fwd+bwd twice, deterministic algorithms: tensors differing',
           float(len(bad)), 0.0)
    if bad:
        print(f'       differing: {bad[:8]}')
    torch.backends.cudnn.deterministic = False
    bad = identical(run(cuda_model, xc, wc), run(cuda_model, xc, wc))
    report('model fp32 fwd+bwd twice, torch defaults: tensors differing', float(len(bad)), 0.0,
           strict=False)
    if bad:
        print(f'       differing: {bad[:8]}')
    bad = [f'out{i}' for i, (p_, q) in enumerate(zip(
        run(cuda_model, xc, wc, torch.float16)[0],
        run(cuda_model, xc, wc, torch.float16)[0])) if not torch.equal(p_, q)]
    report('model AMP fp16 forward twice, torch defaults: outputs differing', float(len(bad)),
           0.0)

    print(f'\n{"FAILED: " + ", ".join(failures) if failures else "all checks passed"}')
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
