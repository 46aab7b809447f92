// CUDA kernels of the ELSA operator, templated over the element type and the kernel size.
//
//   out[b, c, i, j] = sum_{u, v < K} x[b, c, i*s + u*d - pad, j*s + v*d - pad]
//                     * (ghost_mul[c, u*K+v] * attn[b, g(c), u*K+v, i, j] + ghost_add[c, u*K+v])
//
// A ghost is shared by the batch or one per sample (ghost[b, c, u*K+v]): the kernels read it at
// b * D.gm_bstride (D.ga_bstride) + c * K*K + tap, the batch stride 0 for a shared ghost.
//
// KT > 0 is a compile-time kernel size (loops fully unrolled); KT == 0 reads it from dims.K.
// Every kernel walks a flat index with a grid-stride loop whose fastest dimension is the output
// column, so neighbouring threads touch neighbouring addresses of out / attn / grad_out (and of x
// for stride 1). All offsets are int64. Arithmetic is in acc_t (float for half / bfloat16 /
// float, double for double): inputs are converted explicitly (torch builds with
// __CUDA_NO_HALF_OPERATORS__).
//
// The fused softmax + ELSA operator (logits in place of attn, softmax over each head's K*K
// taps in acc_t) has its own forward kernel; its backward reuses the kernels below with the
// probabilities (attn_t = acc_t, recomputed from the logits) and a softmax-backward kernel.
//
// No kernel uses atomics: grad_x is a gather (each element of x sums the outputs it fed),
// grad_attn sums the channels of its head in a loop, and the ghost gradients are reduced in two
// deterministic stages (fixed-shape per-block partials, then a fixed-order sum), so every result
// is bitwise reproducible run to run.
#pragma once

#include <cmath>
#include <cstdint>

#include "elsa_utils.h"

namespace mmelsa {
namespace cuda {

constexpr int kThreads = 256;

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t ld(const scalar_t* __restrict__ p, int64_t k) {
  return static_cast<acc_t>(p[k]);
}

template <int KT>
__device__ __forceinline__ int kernel_size(const ElsaDims& D) {
  return KT > 0 ? KT : static_cast<int>(D.K);
}

__device__ __forceinline__ float exp_acc(float v) { return expf(v); }
__device__ __forceinline__ double exp_acc(double v) { return exp(v); }

// ---------------------------------------------------------------- forward: one thread per output
template <typename scalar_t, typename acc_t, int KT>
__global__ void __launch_bounds__(kThreads)
    elsa_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ attn,
                        const scalar_t* __restrict__ gm, const scalar_t* __restrict__ ga,
                        scalar_t* __restrict__ out, const ElsaDims D, const int64_t total) {
  const int K = kernel_size<KT>(D);
  const int64_t HoWo = D.Ho * D.Wo;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = idx % D.Wo;
    const int64_t i = (idx / D.Wo) % D.Ho;
    const int64_t bc = idx / HoWo;
    const int64_t c = bc % D.C, b = bc / D.C, g = c / D.cpg;
    const scalar_t* xp = x + bc * D.H * D.W;
    const scalar_t* ap = attn + (b * D.G + g) * D.KK * HoWo + i * D.Wo + j;
    const scalar_t* gmp = gm ? gm + b * D.gm_bstride + c * D.KK : nullptr;
    const scalar_t* gap = ga ? ga + b * D.ga_bstride + c * D.KK : nullptr;
    const int64_t y0 = i * D.stride - D.pad, x0 = j * D.stride - D.pad;
    acc_t acc = 0;
#pragma unroll
    for (int u = 0; u < K; ++u) {
      const int64_t y = y0 + u * D.dil;
      if (y < 0 || y >= D.H) continue;
      const scalar_t* xrow = xp + y * D.W;
#pragma unroll
      for (int v = 0; v < K; ++v) {
        const int64_t xx = x0 + v * D.dil;
        if (xx < 0 || xx >= D.W) continue;
        const int t = u * K + v;
        acc_t w = ld<acc_t>(ap, t * HoWo);
        if (gmp) w *= ld<acc_t>(gmp, t);
        if (gap) w += ld<acc_t>(gap, t);
        acc += ld<acc_t>(xrow, xx) * w;
      }
    }
    out[idx] = static_cast<scalar_t>(acc);
  }
}

// ------------------------------------------------ grad_x: gather, one thread per element of x
// attn_t: scalar_t for the plain op, acc_t for the fused op's recomputed probabilities.
template <typename scalar_t, typename acc_t, int KT, typename attn_t = scalar_t>
__global__ void __launch_bounds__(kThreads)
    elsa_grad_x_kernel(const scalar_t* __restrict__ gout, const attn_t* __restrict__ attn,
                       const scalar_t* __restrict__ gm, const scalar_t* __restrict__ ga,
                       scalar_t* __restrict__ gx, const ElsaDims D, const int64_t total) {
  const int K = kernel_size<KT>(D);
  const int64_t HoWo = D.Ho * D.Wo, HW = D.H * D.W;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t xx = idx % D.W;
    const int64_t y = (idx / D.W) % D.H;
    const int64_t bc = idx / HW;
    const int64_t c = bc % D.C, b = bc / D.C, g = c / D.cpg;
    const scalar_t* gp = gout + bc * HoWo;
    const attn_t* ap = attn + (b * D.G + g) * D.KK * HoWo;
    const scalar_t* gmp = gm ? gm + b * D.gm_bstride + c * D.KK : nullptr;
    const scalar_t* gap = ga ? ga + b * D.ga_bstride + c * D.KK : nullptr;
    acc_t acc = 0;
    // output (i, j) reads x (y, xx) through tap (u, v) iff i*s + u*d - pad == y, likewise j.
#pragma unroll
    for (int u = 0; u < K; ++u) {
      const int64_t ny = y + D.pad - u * D.dil;
      if (ny < 0 || ny % D.stride != 0) continue;
      const int64_t i = ny / D.stride;
      if (i >= D.Ho) continue;
#pragma unroll
      for (int v = 0; v < K; ++v) {
        const int64_t nx = xx + D.pad - v * D.dil;
        if (nx < 0 || nx % D.stride != 0) continue;
        const int64_t j = nx / D.stride;
        if (j >= D.Wo) continue;
        const int t = u * K + v;
        const int64_t o = i * D.Wo + j;
        acc_t w = ld<acc_t>(ap, t * HoWo + o);
        if (gmp) w *= ld<acc_t>(gmp, t);
        if (gap) w += ld<acc_t>(gap, t);
        acc += ld<acc_t>(gp, o) * w;
      }
    }
    gx[idx] = static_cast<scalar_t>(acc);
  }
}

// ------------------- grad_attn: one thread per element of attn, sums the channels of its head
// out_t: scalar_t for the plain op; acc_t for the fused op, whose softmax backward follows.
template <typename scalar_t, typename acc_t, int KT, typename out_t = scalar_t>
__global__ void __launch_bounds__(kThreads)
    elsa_grad_attn_kernel(const scalar_t* __restrict__ gout, const scalar_t* __restrict__ x,
                          const scalar_t* __restrict__ gm, out_t* __restrict__ gattn,
                          const ElsaDims D, const int64_t total) {
  const int K = kernel_size<KT>(D);
  const int64_t HoWo = D.Ho * D.Wo, HW = D.H * D.W;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = idx % HoWo;
    const int64_t j = o % D.Wo, i = o / D.Wo;
    const int64_t t = (idx / HoWo) % D.KK;
    const int64_t bg = idx / (HoWo * D.KK);
    const int64_t b = bg / D.G, g = bg % D.G;
    const int u = static_cast<int>(t / K), v = static_cast<int>(t % K);
    const int64_t y = i * D.stride + u * D.dil - D.pad;
    const int64_t xx = j * D.stride + v * D.dil - D.pad;
    acc_t acc = 0;
    if (y >= 0 && y < D.H && xx >= 0 && xx < D.W) {
      const int64_t c0 = g * D.cpg;
      const scalar_t* gp = gout + (b * D.C + c0) * HoWo + o;
      const scalar_t* xp = x + (b * D.C + c0) * HW + y * D.W + xx;
      for (int64_t k = 0; k < D.cpg; ++k) {
        acc_t p = ld<acc_t>(gp, k * HoWo) * ld<acc_t>(xp, k * HW);
        if (gm) p *= ld<acc_t>(gm, b * D.gm_bstride + (c0 + k) * D.KK + t);
        acc += p;
      }
    }
    gattn[idx] = static_cast<out_t>(acc);
  }
}

// ------------------------------------------------------------- ghost gradients, stage 1
// Block (c*KK + t, chunk) sums, over the positions n = (b, i, j) of its chunk,
//   p = grad_out[b, c, i, j] * x[b, c, tap (t) of (i, j)]   -> partial of grad_ghost_add[c, t]
//   p * attn[b, g(c), t, i, j]                               -> partial of grad_ghost_mul[c, t]
// and writes one partial each (of grad_ghost_*[b, c, t] for a per-sample ghost). The reduction
// tree is fixed, hence deterministic.
// The B*Ho*Wo positions are cut into segments of seg_len (all of them in one, or one sample
// each when a ghost is per sample, so that no chunk spans two samples), each segment into
// chunks_per_seg chunks of chunk_len; chunk k of segment s is partial column
// s * chunks_per_seg + k. The blocks of grid.y step over the n_chunks chunks (there may be more
// chunks than grid.y can hold: one per sample at least).
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v, acc_t* smem) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  acc_t r = 0;
  if (warp == 0) {
    r = lane < static_cast<int>(blockDim.x >> 5) ? smem[lane] : acc_t(0);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) r += __shfl_down_sync(0xffffffffu, r, off);
  }
  __syncthreads();  // smem is reused by the next call
  return r;         // valid in thread 0
}

template <typename scalar_t, typename acc_t, int KT, typename attn_t = scalar_t>
__global__ void __launch_bounds__(kThreads)
    elsa_ghost_partial_kernel(const scalar_t* __restrict__ gout, const scalar_t* __restrict__ x,
                              const attn_t* __restrict__ attn, acc_t* __restrict__ part_gm,
                              acc_t* __restrict__ part_ga, const ElsaDims D, const int64_t seg_len,
                              const int64_t chunk_len, const int64_t chunks_per_seg,
                              const int64_t n_chunks) {
  __shared__ acc_t smem[kThreads / 32];
  const int K = kernel_size<KT>(D);
  const int64_t HoWo = D.Ho * D.Wo, HW = D.H * D.W;
  const int64_t ct = blockIdx.x;  // c * KK + t
  const int64_t c = ct / D.KK, t = ct % D.KK, g = c / D.cpg;
  const int u = static_cast<int>(t / K), v = static_cast<int>(t % K);
  // uniform over the block, so every thread reaches block_sum's barriers equally often
  for (int64_t chunk = blockIdx.y; chunk < n_chunks; chunk += gridDim.y) {
    const int64_t seg = chunk / chunks_per_seg;
    const int64_t n_begin = seg * seg_len + (chunk % chunks_per_seg) * chunk_len;
    const int64_t n_end = min(n_begin + chunk_len, (seg + 1) * seg_len);
    acc_t s_t = 0, s_ta = 0;
    for (int64_t n = n_begin + threadIdx.x; n < n_end; n += blockDim.x) {
      const int64_t o = n % HoWo, b = n / HoWo;
      const int64_t i = o / D.Wo, j = o % D.Wo;
      const int64_t y = i * D.stride + u * D.dil - D.pad;
      const int64_t xx = j * D.stride + v * D.dil - D.pad;
      if (y < 0 || y >= D.H || xx < 0 || xx >= D.W) continue;
      const int64_t bc = b * D.C + c;
      const acc_t p = ld<acc_t>(gout, bc * HoWo + o) * ld<acc_t>(x, bc * HW + y * D.W + xx);
      s_t += p;
      if (part_gm) s_ta += p * ld<acc_t>(attn, ((b * D.G + g) * D.KK + t) * HoWo + o);
    }
    if (part_ga) {
      const acc_t r = block_sum(s_t, smem);
      if (threadIdx.x == 0) part_ga[ct * n_chunks + chunk] = r;
    }
    if (part_gm) {
      const acc_t r = block_sum(s_ta, smem);
      if (threadIdx.x == 0) part_gm[ct * n_chunks + chunk] = r;
    }
  }
}

// ------------------------------------------------------------- ghost gradients, stage 2
// part: n_rows rows (c * KK + t) of n_chunks partials, the chunks in `groups` equal runs (1:
// a shared ghost, every chunk summed into dst[row]; B: a per-sample ghost, whose chunks never
// span two samples, run b summed into dst[b * n_rows + row]). Each sum in a fixed order.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    elsa_ghost_final_kernel(const acc_t* __restrict__ part, scalar_t* __restrict__ dst,
                            const int64_t n_rows, const int64_t n_chunks, const int64_t groups) {
  const int64_t per_group = n_chunks / groups;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       r < groups * n_rows; r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const acc_t* src = part + (r % n_rows) * n_chunks + (r / n_rows) * per_group;
    acc_t acc = 0;
    for (int64_t k = 0; k < per_group; ++k) acc += src[k];
    dst[r] = static_cast<scalar_t>(acc);
  }
}

// ------------------------------------------------- fused softmax + ELSA: forward
// One thread per (b, g, output pixel), consecutive threads on consecutive columns (coalesced
// logits loads and out stores). The thread takes the softmax of its pixel's K*K logits once,
// in acc_t, and reuses it for the C/G channels of head g: the logits are read once instead of
// once per channel. With a compile-time K the probabilities stay in registers; the generic
// kernel (KT == 0) keeps only the max and 1/sum and recomputes each probability per channel.
template <typename scalar_t, typename acc_t, int KT>
__global__ void __launch_bounds__(kThreads)
    elsa_softmax_forward_kernel(const scalar_t* __restrict__ x,
                                const scalar_t* __restrict__ logits,
                                const scalar_t* __restrict__ gm, const scalar_t* __restrict__ ga,
                                scalar_t* __restrict__ out, const ElsaDims D,
                                const int64_t total) {
  const int K = kernel_size<KT>(D);
  const int KK = K * K;
  const int64_t HoWo = D.Ho * D.Wo, HW = D.H * D.W;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = idx % HoWo;  // idx = (b * G + g) * HoWo + o
    const int64_t j = o % D.Wo, i = o / D.Wo;
    const int64_t bg = idx / HoWo;
    const int64_t b = bg / D.G, g = bg % D.G;
    const scalar_t* lp = logits + bg * KK * HoWo + o;
    acc_t mx = ld<acc_t>(lp, 0);
    for (int t = 1; t < KK; ++t) {
      const acc_t l = ld<acc_t>(lp, t * HoWo);
      mx = l > mx ? l : mx;
    }
    acc_t p[KT > 0 ? KT * KT : 1];
    acc_t sum = 0;
#pragma unroll
    for (int t = 0; t < KK; ++t) {
      const acc_t e = exp_acc(ld<acc_t>(lp, t * HoWo) - mx);
      if constexpr (KT > 0) p[t] = e;
      sum += e;
    }
    const acc_t inv = acc_t(1) / sum;
    if constexpr (KT > 0) {
#pragma unroll
      for (int t = 0; t < KK; ++t) p[t] *= inv;
    }
    const int64_t y0 = i * D.stride - D.pad, x0 = j * D.stride - D.pad;
    for (int64_t c = g * D.cpg; c < (g + 1) * D.cpg; ++c) {
      const int64_t bc = b * D.C + c;
      const scalar_t* xp = x + bc * HW;
      const scalar_t* gmp = gm ? gm + b * D.gm_bstride + c * KK : nullptr;
      const scalar_t* gap = ga ? ga + b * D.ga_bstride + c * KK : nullptr;
      acc_t acc = 0;
#pragma unroll
      for (int u = 0; u < K; ++u) {
        const int64_t y = y0 + u * D.dil;
        if (y < 0 || y >= D.H) continue;
        const scalar_t* xrow = xp + y * D.W;
#pragma unroll
        for (int v = 0; v < K; ++v) {
          const int64_t xx = x0 + v * D.dil;
          if (xx < 0 || xx >= D.W) continue;
          const int t = u * K + v;
          acc_t w;
          if constexpr (KT > 0) {
            w = p[t];
          } else {
            w = exp_acc(ld<acc_t>(lp, t * HoWo) - mx) * inv;
          }
          if (gmp) w *= ld<acc_t>(gmp, t);
          if (gap) w += ld<acc_t>(gap, t);
          acc += ld<acc_t>(xrow, xx) * w;
        }
      }
      out[bc * HoWo + o] = static_cast<scalar_t>(acc);
    }
  }
}

// ------------------------------------------------- fused softmax + ELSA: backward pieces
// The probabilities (B, G, K*K, Ho, Wo) in acc_t, one thread per (b, g, pixel), for the plain
// backward kernels (attn_t = acc_t). Same arithmetic as the forward kernel's softmax.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    elsa_softmax_probs_kernel(const scalar_t* __restrict__ logits, acc_t* __restrict__ prob,
                              const ElsaDims D, const int64_t total) {
  const int64_t HoWo = D.Ho * D.Wo, KK = D.KK;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t off = (idx / HoWo) * KK * HoWo + idx % HoWo;
    const scalar_t* lp = logits + off;
    acc_t* pp = prob + off;
    acc_t mx = ld<acc_t>(lp, 0);
    for (int64_t t = 1; t < KK; ++t) {
      const acc_t l = ld<acc_t>(lp, t * HoWo);
      mx = l > mx ? l : mx;
    }
    acc_t sum = 0;
    for (int64_t t = 0; t < KK; ++t) {
      const acc_t e = exp_acc(ld<acc_t>(lp, t * HoWo) - mx);
      pp[t * HoWo] = e;
      sum += e;
    }
    const acc_t inv = acc_t(1) / sum;
    for (int64_t t = 0; t < KK; ++t) pp[t * HoWo] *= inv;
  }
}

// grad_logits_t = p_t * (grad_p_t - sum_u p_u * grad_p_u), one thread per (b, g, pixel);
// grad_p is the plain grad_attn kernel's result, kept in acc_t.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    elsa_softmax_grad_kernel(const acc_t* __restrict__ prob, const acc_t* __restrict__ gprob,
                             scalar_t* __restrict__ glogits, const ElsaDims D,
                             const int64_t total) {
  const int64_t HoWo = D.Ho * D.Wo, KK = D.KK;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t off = (idx / HoWo) * KK * HoWo + idx % HoWo;
    acc_t dot = 0;
    for (int64_t t = 0; t < KK; ++t) dot += prob[off + t * HoWo] * gprob[off + t * HoWo];
    for (int64_t t = 0; t < KK; ++t) {
      const int64_t k = off + t * HoWo;
      glogits[k] = static_cast<scalar_t>(prob[k] * (gprob[k] - dot));
    }
  }
}

}  // namespace cuda
}  // namespace mmelsa
