// The tiled fast path of the ELSA operator on CUDA: K = 7, stride 1, dilation 1 (the only
// configuration ELSA-Swin uses), 32-bit indices. docs/fast_elsa_design.md section 2 plans it;
// the generic kernels of elsa_kernel.cuh stay the fallback for every other case. Device code
// only: when the path applies and its grids are chosen by the launchers
// (csrc/pytorch/cuda/elsa_cuda.cu).
//
// Every map is read and written through its element strides (Map4 / Map5), so NCHW tensors,
// channels_last ones, a channel slice of a wider channels-last map (ELSAAttention's v) and
// pixel-major attention (a 1x1 conv's channels_last output) are all used in place.
//
// A block owns (b, head g, a tile of kRows x kCols pixels), one pixel per thread. With stride 1
// an output pixel and the input pixel at the same place share the tile, so the forward, grad_x
// and grad_attn all use the same decomposition:
//   * the pixel's 49 attention values (or its softmax, computed once from the logits) are
//     loaded once into registers, instead of once per channel of the head;
//   * per channel, the plane's tile with its 3-pixel halo is staged in shared memory in acc_t
//     (converted once), zero outside the image, so the tap loops have no bounds tests, and so
//     are the channel's ghost rows (the block's sample's, for a per-sample ghost).
// The backward computes grad_x (a gather: gout's halo tile with the attention of the outputs
// each tap came from) and grad_attn (49 register accumulators over the channels, then the
// softmax backward in place for the fused op) in one kernel over the same tiles. The ghost
// gradients are a row-chunk reduction: a block per (channel, chunk of rows) carries 49
// accumulators per thread along its rows and reduces them in a fixed order; the generic final
// kernel sums the chunks in a fixed order (each sample's own, for a per-sample ghost). No
// atomics: every result is bitwise reproducible.
#pragma once

#include <cstdint>

#include "elsa_kernel.cuh"

namespace mmelsa {
namespace cuda {
namespace tiled {

constexpr int kK = 7, kKK = kK * kK, kHalo = kK / 2;
constexpr int kRows = 8, kCols = 32;  // a block's pixel tile, one pixel per thread
constexpr int kTileH = kRows + 2 * kHalo, kTileW = kCols + 2 * kHalo;
static_assert(kRows * kCols == kThreads, "one thread per pixel of the tile");
constexpr int kGhostThreads = 64;  // threads of a ghost block: one per column, strided

// 32-bit sizes of a problem on the fast path.
struct Dims {
  int B, C, G, H, W, cpg;
  int tiles_w;                 // tiles per row of tiles
  int gm_bstride, ga_bstride;  // ElsaDims': C * 49 for a per-sample ghost, else 0
};

// Element strides of a (B, C, H, W) map and of a (B, G, K*K, H, W) attention map.
struct Map4 {
  int b, c, h, w;
};
struct Map5 {
  int b, g, t, h, w;
};

// Where this thread's pixel is: decoded once per block, never inside a tap loop.
struct Pixel {
  int b, g;
  int y0, x0;  // the tile's first row and column
  int r, col;  // the thread's place in the tile
  int i, j;    // its pixel
  bool inside;
};

__device__ __forceinline__ Pixel pixel_of_thread(const Dims& T) {
  Pixel p;
  const int bg = static_cast<int>(blockIdx.y);
  p.b = bg / T.G;
  p.g = bg % T.G;
  const int tile = static_cast<int>(blockIdx.x);
  p.y0 = (tile / T.tiles_w) * kRows;
  p.x0 = (tile % T.tiles_w) * kCols;
  p.r = static_cast<int>(threadIdx.x) / kCols;
  p.col = static_cast<int>(threadIdx.x) % kCols;
  p.i = p.y0 + p.r;
  p.j = p.x0 + p.col;
  p.inside = p.i < T.H && p.j < T.W;
  return p;
}

// Offset of this thread's pixel (b, g, tap 0) in an attention map.
__device__ __forceinline__ int attn_offset(const Map5& M, const Pixel& p) {
  return p.b * M.b + p.g * M.g + p.i * M.h + p.j * M.w;
}

// A (b, c) plane of a map (strides M) around the tile into shared memory, with its halo, zero
// outside the image.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void stage_halo(const scalar_t* __restrict__ plane, const Map4& M,
                                           acc_t (*tile)[kTileW], const Pixel& p, const Dims& T) {
  for (int k = threadIdx.x; k < kTileH * kTileW; k += kThreads) {
    const int ty = k / kTileW, tx = k % kTileW;
    const int y = p.y0 + ty - kHalo, x = p.x0 + tx - kHalo;
    tile[ty][tx] =
        (y >= 0 && y < T.H && x >= 0 && x < T.W) ? ld<acc_t>(plane, y * M.h + x * M.w) : acc_t(0);
  }
}

// The ghost rows of (sample b, channel c) into shared memory (a block's pixels are all of one
// sample); an absent ghost_mul is 1, an absent ghost_add 0, which leave every weight exactly
// the attention value.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void stage_ghosts(const scalar_t* __restrict__ gm,
                                             const scalar_t* __restrict__ ga, int b, int c,
                                             const Dims& T, acc_t* gms, acc_t* gas) {
  if (threadIdx.x < kKK) {
    const int tc = c * kKK + threadIdx.x;
    gms[threadIdx.x] = gm ? ld<acc_t>(gm, b * T.gm_bstride + tc) : acc_t(1);
    gas[threadIdx.x] = ga ? ld<acc_t>(ga, b * T.ga_bstride + tc) : acc_t(0);
  }
}

// Softmax over the taps in acc_t, the arithmetic of elsa_softmax_probs_kernel.
template <typename acc_t>
__device__ __forceinline__ void softmax_taps(acc_t (&v)[kKK]) {
  acc_t mx = v[0];
#pragma unroll
  for (int t = 1; t < kKK; ++t) mx = v[t] > mx ? v[t] : mx;
  acc_t sum = 0;
#pragma unroll
  for (int t = 0; t < kKK; ++t) {
    v[t] = exp_acc(v[t] - mx);
    sum += v[t];
  }
  const acc_t inv = acc_t(1) / sum;
#pragma unroll
  for (int t = 0; t < kKK; ++t) v[t] *= inv;
}

// ------------------------------------------------------------------------------- forward
// kLogits: attn holds logits; the pixel's softmax is taken once, in registers.
template <typename scalar_t, typename acc_t, bool kLogits>
__global__ void __launch_bounds__(kThreads)
    elsa_tiled_forward_kernel(const scalar_t* __restrict__ x, const Map4 X,
                              const scalar_t* __restrict__ attn, const Map5 A,
                              const scalar_t* __restrict__ gm, const scalar_t* __restrict__ ga,
                              scalar_t* __restrict__ out, const Map4 O, const Dims T) {
  __shared__ acc_t xs[kTileH][kTileW];
  __shared__ acc_t gms[kKK], gas[kKK];
  const Pixel p = pixel_of_thread(T);
  acc_t a[kKK];
  if (p.inside) {
    const scalar_t* ap = attn + attn_offset(A, p);
#pragma unroll
    for (int t = 0; t < kKK; ++t) a[t] = ld<acc_t>(ap, t * A.t);
    if constexpr (kLogits) softmax_taps(a);
  }
  for (int k = 0; k < T.cpg; ++k) {
    const int c = p.g * T.cpg + k;
    __syncthreads();  // every thread is done with the previous channel's tile
    stage_halo(x + p.b * X.b + c * X.c, X, xs, p, T);
    stage_ghosts(gm, ga, p.b, c, T, gms, gas);
    __syncthreads();
    if (!p.inside) continue;
    acc_t acc = 0;
#pragma unroll
    for (int u = 0; u < kK; ++u) {
#pragma unroll
      for (int v = 0; v < kK; ++v) {
        const int t = u * kK + v;
        acc += xs[p.r + u][p.col + v] * (gms[t] * a[t] + gas[t]);
      }
    }
    out[p.b * O.b + c * O.c + p.i * O.h + p.j * O.w] = static_cast<scalar_t>(acc);
  }
}

// ------------------------------------------------------------------------------- backward
// grad_x and grad_attn over the same tiles, either one optional (a null destination).
//   grad_x[c, y, x]  = sum_t gout[c, o_t] * (gm[c,t] * attn[t, o_t] + ga[c,t]),
//                      o_t = (y + 3 - u, x + 3 - v), the output that read (y, x) through t;
//   grad_attn[t, o]  = sum_c gout[c, o] * x[c, o + t - 3] * gm[c,t].
// attn (attn_t) is the attention for the plain op, the probabilities (acc_t) for the fused op;
// it is read only for grad_x. kLogits: the fused op, whose grad_logits is computed from the
// logits in place of grad_attn (softmax backward, probabilities recomputed in registers).
template <typename scalar_t, typename acc_t, typename attn_t, bool kLogits>
__global__ void __launch_bounds__(kThreads)
    elsa_tiled_backward_kernel(const scalar_t* __restrict__ gout, const Map4 GO,
                               const scalar_t* __restrict__ x, const Map4 X,
                               const attn_t* __restrict__ attn, const Map5 A,
                               const scalar_t* __restrict__ logits, const Map5 L,
                               const scalar_t* __restrict__ gm, const scalar_t* __restrict__ ga,
                               scalar_t* __restrict__ gx, const Map4 GX,
                               scalar_t* __restrict__ gattn, const Map5 GA, const Dims T) {
  __shared__ acc_t xs[kTileH][kTileW];
  __shared__ acc_t gs[kTileH][kTileW];
  __shared__ acc_t gms[kKK], gas[kKK];
  const Pixel p = pixel_of_thread(T);
  acc_t a_in[kKK];  // attn[t, o_t]: the attention of the output that tap t came from
  acc_t g_at[kKK];  // grad_attn accumulators of this pixel
  if (gx && p.inside) {
    const attn_t* ap = attn + p.b * A.b + p.g * A.g;
#pragma unroll
    for (int u = 0; u < kK; ++u) {
      const int oy = p.i + kHalo - u;
#pragma unroll
      for (int v = 0; v < kK; ++v) {
        const int ox = p.j + kHalo - v, t = u * kK + v;
        const bool in_image = oy >= 0 && oy < T.H && ox >= 0 && ox < T.W;
        a_in[t] = in_image ? ld<acc_t>(ap, t * A.t + oy * A.h + ox * A.w) : acc_t(0);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kKK; ++t) g_at[t] = 0;
  for (int k = 0; k < T.cpg; ++k) {
    const int c = p.g * T.cpg + k;
    const scalar_t* gplane = gout + p.b * GO.b + c * GO.c;
    __syncthreads();  // every thread is done with the previous channel's tiles
    if (gattn) stage_halo(x + p.b * X.b + c * X.c, X, xs, p, T);
    if (gx) stage_halo(gplane, GO, gs, p, T);
    stage_ghosts(gm, ga, p.b, c, T, gms, gas);
    __syncthreads();
    if (!p.inside) continue;
    if (gx) {
      // gout at o_t sits at tile (r + 3 + 3 - u, col + 3 + 3 - v); zero outside the image
      acc_t acc = 0;
#pragma unroll
      for (int u = 0; u < kK; ++u) {
#pragma unroll
        for (int v = 0; v < kK; ++v) {
          const int t = u * kK + v;
          acc += gs[p.r + 2 * kHalo - u][p.col + 2 * kHalo - v] * (gms[t] * a_in[t] + gas[t]);
        }
      }
      gx[p.b * GX.b + c * GX.c + p.i * GX.h + p.j * GX.w] = static_cast<scalar_t>(acc);
    }
    if (gattn) {
      const acc_t go = ld<acc_t>(gplane, p.i * GO.h + p.j * GO.w);
#pragma unroll
      for (int u = 0; u < kK; ++u) {
#pragma unroll
        for (int v = 0; v < kK; ++v) {
          const int t = u * kK + v;
          g_at[t] += go * xs[p.r + u][p.col + v] * gms[t];
        }
      }
    }
  }
  if (!gattn || !p.inside) return;
  scalar_t* dst = gattn + attn_offset(GA, p);
  if constexpr (kLogits) {
    acc_t prob[kKK];
    const scalar_t* lp = logits + attn_offset(L, p);
#pragma unroll
    for (int t = 0; t < kKK; ++t) prob[t] = ld<acc_t>(lp, t * L.t);
    softmax_taps(prob);
    acc_t dot = 0;
#pragma unroll
    for (int t = 0; t < kKK; ++t) dot += prob[t] * g_at[t];
#pragma unroll
    for (int t = 0; t < kKK; ++t) dst[t * GA.t] = static_cast<scalar_t>(prob[t] * (g_at[t] - dot));
  } else {
#pragma unroll
    for (int t = 0; t < kKK; ++t) dst[t * GA.t] = static_cast<scalar_t>(g_at[t]);
  }
}

// The probabilities of the fused op's logits (strides L) for grad_x and grad_ghost_mul, into
// prob (acc_t, strides P), one thread per pixel of the tile grid.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    elsa_tiled_probs_kernel(const scalar_t* __restrict__ logits, const Map5 L,
                            acc_t* __restrict__ prob, const Map5 P, const Dims T) {
  const Pixel p = pixel_of_thread(T);
  if (!p.inside) return;
  acc_t v[kKK];
  const scalar_t* lp = logits + attn_offset(L, p);
#pragma unroll
  for (int t = 0; t < kKK; ++t) v[t] = ld<acc_t>(lp, t * L.t);
  softmax_taps(v);
  acc_t* pp = prob + attn_offset(P, p);
#pragma unroll
  for (int t = 0; t < kKK; ++t) pp[t * P.t] = v[t];
}

// --------------------------------------------------------------- ghost gradients, stage 1
// Fixed-order block sum of the threads' 49 values: thread t < 49 adds tap t's values in thread
// order and writes dst[t * stride]. Called by every thread of the block (it has barriers).
template <typename acc_t>
__device__ __forceinline__ void sum_taps_of_block(const acc_t (&s)[kKK], acc_t* red, acc_t* dst,
                                                  int stride) {
  constexpr int kStride = kKK + 1;  // padded rows: the column reads below hit distinct banks
  __syncthreads();                  // an earlier call's reads are done
#pragma unroll
  for (int t = 0; t < kKK; ++t) red[threadIdx.x * kStride + t] = s[t];
  __syncthreads();
  if (threadIdx.x < kKK) {
    acc_t sum = 0;
    for (int k = 0; k < kGhostThreads; ++k) sum += red[k * kStride + threadIdx.x];
    dst[threadIdx.x * stride] = sum;
  }
}

// Block (c, chunk): its threads take the columns j, j + kGhostThreads, ... of the chunk's rows
// n = b * H + i and carry, per tap t,
//   s_add[t] += gout[b, c, i, j] * x[b, c, i + u - 3, j + v - 3]
//   s_mul[t] += that product * attn[b, g(c), t, i, j]
// then the block sums the threads' values in thread order (sum_taps_of_block) and writes the
// partials [c * 49 + t, chunk], the layout elsa_ghost_final_kernel sums. The B*H rows are cut
// into segments of seg_rows (all of them, or one sample's H when a ghost is per sample, so that
// no chunk spans two samples), each into chunks_per_seg chunks of rows_per_chunk rows.
template <typename scalar_t, typename acc_t, typename attn_t>
__global__ void __launch_bounds__(kGhostThreads)
    elsa_tiled_ghost_partial_kernel(const scalar_t* __restrict__ gout, const Map4 GO,
                                    const scalar_t* __restrict__ x, const Map4 X,
                                    const attn_t* __restrict__ attn, const Map5 A,
                                    acc_t* __restrict__ part_gm, acc_t* __restrict__ part_ga,
                                    const Dims T, const int seg_rows, const int rows_per_chunk,
                                    const int chunks_per_seg, const int n_chunks) {
  __shared__ acc_t red[kGhostThreads * (kKK + 1)];
  const int c = static_cast<int>(blockIdx.x), chunk = static_cast<int>(blockIdx.y);
  const int g = c / T.cpg;
  const int seg = chunk / chunks_per_seg;
  const int n_begin = seg * seg_rows + (chunk % chunks_per_seg) * rows_per_chunk;
  const int n_end = static_cast<int>(min(int64_t(n_begin) + rows_per_chunk,
                                         int64_t(seg + 1) * seg_rows));  // int64: no overflow
  acc_t s_add[kKK], s_mul[kKK];
#pragma unroll
  for (int t = 0; t < kKK; ++t) s_add[t] = s_mul[t] = 0;
  for (int n = n_begin; n < n_end; ++n) {
    const int b = n / T.H, i = n % T.H;
    const scalar_t* xp = x + b * X.b + c * X.c;
    const scalar_t* gp = gout + b * GO.b + c * GO.c + i * GO.h;
    const attn_t* ap = part_gm ? attn + b * A.b + g * A.g + i * A.h : nullptr;
    for (int j = threadIdx.x; j < T.W; j += kGhostThreads) {
      const acc_t go = ld<acc_t>(gp, j * GO.w);
#pragma unroll
      for (int u = 0; u < kK; ++u) {
        const int y = i + u - kHalo;
        if (y < 0 || y >= T.H) continue;
#pragma unroll
        for (int v = 0; v < kK; ++v) {
          const int xx = j + v - kHalo;
          if (xx < 0 || xx >= T.W) continue;
          const int t = u * kK + v;
          const acc_t prod = go * ld<acc_t>(xp, y * X.h + xx * X.w);
          s_add[t] += prod;
          if (ap) s_mul[t] += prod * ld<acc_t>(ap, t * A.t + j * A.w);
        }
      }
    }
  }
  const int64_t row0 = static_cast<int64_t>(c) * kKK * n_chunks + chunk;  // (c, t = 0, chunk)
  if (part_ga) sum_taps_of_block(s_add, red, part_ga + row0, n_chunks);
  if (part_gm) sum_taps_of_block(s_mul, red, part_gm + row0, n_chunks);
}

}  // namespace tiled
}  // namespace cuda
}  // namespace mmelsa
