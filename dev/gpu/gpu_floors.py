"""The two ceilings of the GPU, measured, and the ELSA operator's floors computed from them.

Measures, on the GPU it runs on (the ceilings are measured there, in the same run, not taken
from a data sheet):
  * device-to-device copy bandwidth (1 GiB buffers, bytes read + written), with the same
    function as benchmark_elsa_op.py (mmelsa.utils.benchmark.copy_bandwidth);
  * the fp32 FMA rate of the CUDA cores: a kernel of 8 independent fmaf() chains per thread,
    8 blocks of 256 threads per multiprocessor (compiled by CuPy's NVRTC; by torch's
    load_inline when CuPy is missing), timed with CUDA events, median of 5;
then prints the floor of each case of benchmark_elsa_op.py (docs/fast_elsa_design.md §1):
floor = max(minimal bytes / copy bandwidth, multiply-adds / FMA rate), with minimal bytes
fwd 2X + A + g, bwd 3X + 2A + 2g, and multiply-adds fwd 2P, bwd 4P (P = B*C*H*W*K*K).

With --bench-table FILE (the markdown output of benchmark_elsa_op.py --device cuda) it adds, for
every measured row, the floor, the measured time over the floor and the issue's target
(forward <= 2x floor, backward <= 3x floor).

    python3 dev/gpu/gpu_floors.py [--bench-table bench_op.md] [--json floors.json]
    python3 dev/gpu/gpu_floors.py --rates 3000 33.5 --bench-table bench_op.md  # no GPU
"""
import argparse
import json
import os.path as osp
import statistics
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
from benchmark_elsa_op import CASES, K  # noqa: E402

from mmelsa.utils.benchmark import copy_bandwidth, time_fn  # noqa: E402

CHAINS, UNROLL, THREADS, BLOCKS_PER_SM = 8, 16, 256, 8
FMA_SRC = r'''
extern "C" __global__ void fma_rate(float *out, int iters, float a, float b) {
  float x0 = threadIdx.x * 1e-3f, x1 = x0 + 1.f, x2 = x0 + 2.f, x3 = x0 + 3.f;
  float x4 = x0 + 4.f, x5 = x0 + 5.f, x6 = x0 + 6.f, x7 = x0 + 7.f;
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      x0 = fmaf(x0, a, b); x1 = fmaf(x1, a, b); x2 = fmaf(x2, a, b); x3 = fmaf(x3, a, b);
      x4 = fmaf(x4, a, b); x5 = fmaf(x5, a, b); x6 = fmaf(x6, a, b); x7 = fmaf(x7, a, b);
    }
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
}
'''


def fma_rate(iters=40000):
    """fp32 FMAs per second on the CUDA cores, and which compiler built the kernel."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    blocks = sms * BLOCKS_PER_SM
    n = blocks * THREADS
    try:
        import cupy
        kernel = cupy.RawKernel(FMA_SRC, 'fma_rate')
        out = cupy.empty(n, dtype=cupy.float32)
        args = (out, cupy.int32(iters), cupy.float32(0.999999), cupy.float32(1e-6))

        def launch():
            kernel((blocks, ), (THREADS, ), args)

        def timed():
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            launch()
            end.record()
            end.synchronize()
            return cupy.cuda.get_elapsed_time(start, end)

        how = 'CuPy RawKernel (NVRTC)'
        check = lambda: bool(cupy.isfinite(out).all())  # noqa: E731
    except ImportError:
        from torch.utils.cpp_extension import load_inline
        wrapper = FMA_SRC.replace('extern "C" ', '') + r'''
void launch(torch::Tensor out, int64_t iters, int64_t blocks) {
  fma_rate<<<blocks, 256, 0, at::cuda::getCurrentCUDAStream()>>>(
      out.data_ptr<float>(), (int)iters, 0.999999f, 1e-6f);
}'''
        mod = load_inline('mmelsa_fma_rate', cpp_sources='void launch(torch::Tensor, int64_t, '
                          'int64_t);', cuda_sources='#include <ATen/cuda/CUDAContext.h>\n' +
                          wrapper, functions=['launch'], extra_cuda_cflags=['-O3'])
        out = torch.empty(n, device='cuda')

        def launch():
            mod.launch(out, iters, blocks)

        def timed():
            return time_fn(launch, 'cuda', reps=1, warmup=0)

        how = 'torch load_inline (nvcc)'
        check = lambda: bool(torch.isfinite(out).all())  # noqa: E731
    launch()  # warm-up (module load)
    ms = statistics.median(timed() for _ in range(5))
    if not check():
        raise RuntimeError('FMA kernel produced non-finite values')
    return n * iters * UNROLL * CHAINS / (ms * 1e-3), how


def floors(bw, fma):
    """{(case, dtype_bytes, direction): (floor_us, bound)} for every case of the op benchmark."""
    res = {}
    for case, (B, C, H, W, G) in CASES.items():
        for e in (4, 2):
            X, A, g, P = B * C * H * W * e, B * G * K * K * H * W * e, C * K * K * e, \
                B * C * H * W * K * K
            parts = {'fwd': (2 * X + A + g, 2 * P), 'bwd': (3 * X + 2 * A + 2 * g, 4 * P)}
            parts['fwd+bwd'] = tuple(a + b for a, b in zip(parts['fwd'], parts['bwd']))
            for d, (nbytes, macs) in parts.items():
                t_mem, t_fma = nbytes / (bw * 1e9), macs / fma
                res[case, e, d] = (max(t_mem, t_fma) * 1e6, 'memory' if t_mem >= t_fma else 'FMA')
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bench-table', help='markdown output of benchmark_elsa_op.py --device cuda')
    p.add_argument('--json', help='also write the rates and floors here')
    p.add_argument('--rates', nargs=2, type=float, metavar=('GBPS', 'TFMA'),
                   help='use these rates (copy GB/s, fp32 T FMA/s) instead of measuring: '
                        'recompute the tables off the GPU from an earlier run')
    args = p.parse_args()
    if args.rates:
        bw, fma, how, name = args.rates[0], args.rates[1] * 1e12, 'given', 'rates given'
    elif not torch.cuda.is_available():
        sys.exit('no CUDA GPU visible (give --rates to compute floors without one)')
    else:
        bw = copy_bandwidth()
        fma, how = fma_rate()
        name = torch.cuda.get_device_name()
    print(f'# {name}: D2D copy {bw:.0f} GB/s (read + write), fp32 FMA '
          f'{fma / 1e12:.1f} T/s ({2 * fma / 1e12:.1f} TFLOP/s; {how})')
    fl = floors(bw, fma)
    print('\n| case | dtype bytes | dir | floor us | bound |\n|---|---|---|---|---|')
    for (case, e, d), (us, bound) in fl.items():
        print(f'| {case} | {e} | {d} | {us:.1f} | {bound} |')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(copy_gbps=bw, fma_per_s=fma, fma_kernel=how,
                           floors_us={'%s/%d/%s' % k: v[0] for k, v in fl.items()}), f, indent=1)
    if args.bench_table:
        size = {'float32': 4, 'float16': 2, 'bfloat16': 2}
        target = {'fwd': 2.0, 'bwd': 3.0, 'fwd+bwd': None}
        print('\n| case | dtype | dir | native us | floor us | bound | x floor | target |')
        print('|---|---|---|---|---|---|---|---|')
        for line in open(args.bench_table):
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if len(cells) < 5 or cells[0] not in CASES or cells[2] not in size:
                continue
            case, dt, d, ms = cells[0], cells[2], cells[3], float(cells[4])
            if '(%d,' % CASES[case][0] not in cells[1]:
                print(f'| {case} | {dt} | {d} | (batch differs from the case: skipped) |||||')
                continue
            us, bound = fl[case, size[dt], d]
            ratio = ms * 1e3 / us
            t = target[d]
            verdict = '-' if t is None else ('met' if ratio <= t else f'missed (<= {t:.0f}x)')
            print(f'| {case} | {dt} | {d} | {ms * 1e3:.1f} | {us:.1f} | {bound} | {ratio:.2f} |'
                  f' {verdict} |')


if __name__ == '__main__':
    main()
