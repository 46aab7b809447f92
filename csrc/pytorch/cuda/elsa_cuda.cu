// CUDA launchers of the ELSA operators, plain and fused (kLogits): the host-side policy (which
// kernels run, launch geometry, the MMELSA_CUDA_NO_TILED switch), dtype / kernel-size dispatch,
// streams. The kernels (device code only) are in csrc/common/cuda/: the tiled fast path
// (elsa_tiled_kernel.cuh) where it applies (K = 7, stride 1, dilation 1, 32-bit offsets), which
// reads and writes every map through its strides; the generic ones (elsa_kernel.cuh) for every
// other case, on NCHW-contiguous copies. Everything runs on the current stream of the inputs'
// device, with no host synchronisation.
//
// Layouts: x, attn and grad_out arrive NCHW-contiguous, or as they are on the channels-last
// path (elsa_cuda_nhwc: channels innermost, K = 7, stride 1, dilation 1); the outputs are
// allocated in the layouts that rule promises (elsa_empty_grads), whichever kernels run.
//
// MMELSA_CUDA_EMULATION is defined only by tests/ops/cuda_emulation/, which compiles this file as
// host C++ with a SIMT emulator standing in for the launch, the stream and the device guard, to
// check the kernels and this launch logic on a machine without a GPU.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <initializer_list>
#include <type_traits>

#ifndef MMELSA_CUDA_EMULATION
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#define ELSA_DEVICE_GUARD(t) const c10::cuda::CUDAGuard guard((t).device())
#define ELSA_CURRENT_STREAM() at::cuda::getCurrentCUDAStream().stream()
#define ELSA_LAUNCH(kernel, grid, block, stream, ...) \
  do {                                                \
    kernel<<<grid, block, 0, stream>>>(__VA_ARGS__);  \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                   \
  } while (0)
#endif

#include "elsa_kernel.cuh"
#include "elsa_tiled_kernel.cuh"
#include "elsa_utils.h"

namespace mmelsa {
namespace cuda {

// ------------------------------------------------------------------------- launch policy
// Grid for a grid-stride loop over `total` items: enough blocks to fill the GPU many times
// over, capped so that the block count stays well inside grid.x's limit.
inline int64_t blocks_for(int64_t total) {
  return std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 24);
}

// Chunks of the positions for the ghost reduction, cut from n_seg segments of seg_len positions
// each (one segment of all B*Ho*Wo, or one per sample when a ghost is per sample): about 16
// items per thread and at most 1024 chunks in all, but one per segment at least (which bounds
// the partials' memory). Sets *chunk_len, returns the chunks per segment.
inline int64_t ghost_chunks(int64_t n_seg, int64_t seg_len, int64_t* chunk_len) {
  const int64_t target = int64_t(kThreads) * 16;
  const int64_t cap = std::max<int64_t>(1, 1024 / std::max<int64_t>(1, n_seg));
  int64_t n = std::max<int64_t>(1, std::min<int64_t>((seg_len + target - 1) / target, cap));
  *chunk_len = std::max<int64_t>(1, (seg_len + n - 1) / n);
  return std::max<int64_t>(1, (seg_len + *chunk_len - 1) / *chunk_len);
}

namespace tiled {

inline Map4 map4(const at::Tensor& t) {
  return Map4{static_cast<int>(t.stride(0)), static_cast<int>(t.stride(1)),
              static_cast<int>(t.stride(2)), static_cast<int>(t.stride(3))};
}
inline Map5 map5(const at::Tensor& t) {
  return Map5{static_cast<int>(t.stride(0)), static_cast<int>(t.stride(1)),
              static_cast<int>(t.stride(2)), static_cast<int>(t.stride(3)),
              static_cast<int>(t.stride(4))};
}

// Whether every element offset of t (the largest is sum (size - 1) * stride) fits in int.
inline bool offsets_fit_int(const at::Tensor& t) {
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return last < INT_MAX;
}

// MMELSA_CUDA_NO_TILED=1 sends every call to the generic kernels: the GPU benchmark times old
// against new in one process (benchmark_elsa_op.py --compare-generic). Read on every call (a
// getenv, negligible beside a launch) so that it can be switched between calls.
inline bool tiled_disabled() {
  const char* off = std::getenv("MMELSA_CUDA_NO_TILED");
  return off != nullptr && off[0] != '\0' && off[0] != '0';
}

// Fills *T and returns true when the fast path applies: K = 7, stride 1, dilation 1, every
// offset of every tensor it reads or writes (`maps`, the ghosts included; undefined ones are
// skipped) below 2^31, the grid within CUDA's limits, and not switched off.
inline bool fast_path(const ElsaDims& D, std::initializer_list<const at::Tensor*> maps, Dims* T) {
  if (tiled_disabled()) return false;
  if (D.K != kK || D.stride != 1 || D.dil != 1 || D.H <= 0 || D.W <= 0 || D.B <= 0) return false;
  // numel too: the buffers the launchers allocate after this check (the fused backward's
  // probabilities, contiguous) have a map's numel, and an expanded map can have few offsets
  for (const at::Tensor* t : maps)
    if (t->defined() && (t->numel() >= INT_MAX || !offsets_fit_int(*t))) return false;
  const int64_t tiles_w = (D.W + kCols - 1) / kCols, tiles_h = (D.H + kRows - 1) / kRows;
  if (D.B * D.G > 65535 || tiles_w * tiles_h >= INT_MAX || D.B * D.H >= INT_MAX) return false;
  // a per-sample ghost's batch stride C * 49 is below its last offset, checked above
  *T = Dims{
      static_cast<int>(D.B),     static_cast<int>(D.C),          static_cast<int>(D.G),
      static_cast<int>(D.H),     static_cast<int>(D.W),          static_cast<int>(D.cpg),
      static_cast<int>(tiles_w), static_cast<int>(D.gm_bstride), static_cast<int>(D.ga_bstride)};
  return true;
}

inline dim3 tile_grid(const Dims& T) {
  const int tiles_h = (T.H + kRows - 1) / kRows;
  return dim3(static_cast<unsigned>(tiles_h * T.tiles_w), static_cast<unsigned>(T.B * T.G));
}

// Rows per ghost chunk and the chunks per segment of rows (one segment of all B*H rows (b, i),
// or one per sample when a ghost is per sample, so that no chunk spans two samples):
// kGhostRows rows, more when grid.y (every segment's chunks) would overflow. B <= 65535
// (fast_path), so one chunk per sample always fits.
constexpr int kGhostRows = 8;
inline int ghost_rows_per_chunk(const Dims& T, bool per_sample, int* seg_rows,
                                int* chunks_per_seg) {
  const int64_t n_seg = per_sample ? T.B : 1;
  const int64_t rows = per_sample ? T.H : int64_t(T.B) * T.H;      // < 2^31 (fast_path)
  const int64_t max_chunks = std::max<int64_t>(1, 65535 / n_seg);  // per segment
  int64_t per = kGhostRows;
  if ((rows + per - 1) / per > max_chunks) per = (rows + max_chunks - 1) / max_chunks;
  *seg_rows = static_cast<int>(rows);
  *chunks_per_seg = static_cast<int>((rows + per - 1) / per);
  return static_cast<int>(per);
}

}  // namespace tiled
}  // namespace cuda

namespace {

using cuda::blocks_for;
using cuda::ghost_chunks;
using cuda::kThreads;
namespace tiled = cuda::tiled;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Calls f(std::integral_constant<int, KT>) with KT = K for the specialised sizes, 0 otherwise.
template <typename F>
void dispatch_kernel_size(int64_t K, F&& f) {
  switch (K) {
    case 3:
      f(std::integral_constant<int, 3>());
      break;
    case 5:
      f(std::integral_constant<int, 5>());
      break;
    case 7:
      f(std::integral_constant<int, 7>());
      break;
    default:
      f(std::integral_constant<int, 0>());
      break;
  }
}

template <typename scalar_t>
scalar_t* mutable_or_null(at::Tensor& t, bool wanted) {
  return wanted && t.numel() > 0 ? t.mutable_data_ptr<scalar_t>() : nullptr;
}

// t itself when it is NCHW-contiguous (or not wanted), else a contiguous buffer of its shape
// that the generic kernels fill and copy_back() copies into t.
at::Tensor contiguous_target(const at::Tensor& t) {
  return t.is_contiguous() ? t : at::empty(t.sizes(), t.options());
}
void copy_back(at::Tensor& t, const at::Tensor& target) {
  if (!target.is_same(t)) t.copy_(target);
}

// ------------------------------------------------------------------------------- forward
// kLogits: the fused softmax + ELSA op (attn holds logits).
template <bool kLogits>
at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& attn, const at::Tensor& ghost_mul,
                        const at::Tensor& ghost_add, const ElsaDims& D) {
  ELSA_DEVICE_GUARD(x);
  const auto format =
      elsa_cuda_nhwc(x, D) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty({D.B, D.C, D.Ho, D.Wo}, x.options().memory_format(format));
  if (out.numel() == 0) return out;
  const cudaStream_t stream = ELSA_CURRENT_STREAM();
  tiled::Dims T;
  if (tiled::fast_path(D, {&x, &attn, &out, &ghost_mul, &ghost_add}, &T)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, x.scalar_type(), "elsa_tiled_forward_cuda", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          auto* kernel = tiled::elsa_tiled_forward_kernel<scalar_t, acc_t, kLogits>;
          ELSA_LAUNCH(kernel, tiled::tile_grid(T), kThreads, stream, x.const_data_ptr<scalar_t>(),
                      tiled::map4(x), attn.const_data_ptr<scalar_t>(), tiled::map5(attn),
                      elsa_ptr_or_null<scalar_t>(ghost_mul), elsa_ptr_or_null<scalar_t>(ghost_add),
                      out.mutable_data_ptr<scalar_t>(), tiled::map4(out), T);
        });
    return out;
  }
  const at::Tensor xc = x.contiguous(), ac = attn.contiguous();
  at::Tensor dst = contiguous_target(out);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "elsa_forward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        dispatch_kernel_size(D.K, [&](auto kt) {
          constexpr int KT = decltype(kt)::value;
          // plain: one thread per output; fused: one per (b, g, pixel), over the head's channels
          const int64_t total = kLogits ? D.B * D.G * D.Ho * D.Wo : dst.numel();
          auto* kernel = kLogits ? cuda::elsa_softmax_forward_kernel<scalar_t, acc_t, KT>
                                 : cuda::elsa_forward_kernel<scalar_t, acc_t, KT>;
          ELSA_LAUNCH(kernel, blocks_for(total), kThreads, stream, xc.const_data_ptr<scalar_t>(),
                      ac.const_data_ptr<scalar_t>(), elsa_ptr_or_null<scalar_t>(ghost_mul),
                      elsa_ptr_or_null<scalar_t>(ghost_add), dst.mutable_data_ptr<scalar_t>(), D,
                      total);
        });
      });
  copy_back(out, dst);
  return out;
}

// --------------------------------------------------------------- backward, generic kernels
// Whether the ghost reduction must keep the samples apart: a per-sample ghost's gradient is
// asked for.
inline bool ghost_grads_per_sample(const ElsaDims& D, bool need_gm, bool need_ga) {
  return (need_gm && D.gm_bstride != 0) || (need_ga && D.ga_bstride != 0);
}

// Stage 2 of the ghost gradients: each (c, t) row of partials summed in a fixed order, over all
// chunks for a shared ghost, over each sample's own (`groups` = B runs of chunks) for a
// per-sample one. An undefined partial buffer is a gradient not asked for.
template <typename scalar_t, typename acc_t>
void sum_ghost_partials(const at::Tensor& part_gm, const at::Tensor& part_ga, at::Tensor& ggm,
                        at::Tensor& gga, const ElsaDims& D, int64_t rows, int64_t n_chunks,
                        cudaStream_t stream) {
  auto* final_sum = cuda::elsa_ghost_final_kernel<scalar_t, acc_t>;
  if (part_gm.defined()) {
    const int64_t groups = D.gm_bstride != 0 ? D.B : 1;
    ELSA_LAUNCH(final_sum, blocks_for(groups * rows), kThreads, stream,
                part_gm.const_data_ptr<acc_t>(), ggm.mutable_data_ptr<scalar_t>(), rows, n_chunks,
                groups);
  }
  if (part_ga.defined()) {
    const int64_t groups = D.ga_bstride != 0 ? D.B : 1;
    ELSA_LAUNCH(final_sum, blocks_for(groups * rows), kThreads, stream,
                part_ga.const_data_ptr<acc_t>(), gga.mutable_data_ptr<scalar_t>(), rows, n_chunks,
                groups);
  }
}

// The generic backward launches shared by the plain and the fused op. attn points at the
// attention (scalar_t, plain) or at the recomputed probabilities (acc_t, fused); gattn receives
// grad_attn (scalar_t, plain) or grad_p (acc_t, fused: the softmax backward follows).
template <typename scalar_t, typename attn_t, typename gattn_t>
void launch_backward(const scalar_t* go, const scalar_t* xp, const attn_t* ap, const scalar_t* gmp,
                     const scalar_t* gap, scalar_t* gx, gattn_t* gattn, at::Tensor& ggm,
                     at::Tensor& gga, const ElsaDims& D, bool need_gm, bool need_ga,
                     const at::TensorOptions& opts, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  dispatch_kernel_size(D.K, [&](auto kt) {
    constexpr int KT = decltype(kt)::value;
    const int64_t x_total = D.B * D.C * D.H * D.W;
    const int64_t attn_total = D.B * D.G * D.KK * D.Ho * D.Wo;
    if (gx && x_total > 0) {
      auto* kernel = cuda::elsa_grad_x_kernel<scalar_t, acc_t, KT, attn_t>;
      ELSA_LAUNCH(kernel, blocks_for(x_total), kThreads, stream, go, ap, gmp, gap, gx, D, x_total);
    }
    if (gattn && attn_total > 0) {
      auto* kernel = cuda::elsa_grad_attn_kernel<scalar_t, acc_t, KT, gattn_t>;
      ELSA_LAUNCH(kernel, blocks_for(attn_total), kThreads, stream, go, xp, gmp, gattn, D,
                  attn_total);
    }
    if (need_gm || need_ga) {
      const int64_t rows = D.C * D.KK;
      const int64_t n_total = D.B * D.Ho * D.Wo;
      if (n_total == 0 || rows == 0) {
        if (need_gm) ggm.zero_();
        if (need_ga) gga.zero_();
        return;
      }
      const int64_t n_seg = ghost_grads_per_sample(D, need_gm, need_ga) ? D.B : 1;
      const int64_t seg_len = n_total / n_seg;
      int64_t chunk_len = 1;
      const int64_t chunks_per_seg = ghost_chunks(n_seg, seg_len, &chunk_len);
      const int64_t n_chunks = n_seg * chunks_per_seg;
      const auto popts = opts.dtype(c10::CppTypeToScalarType<acc_t>::value);
      at::Tensor part_gm = need_gm ? at::empty({rows, n_chunks}, popts) : at::Tensor();
      at::Tensor part_ga = need_ga ? at::empty({rows, n_chunks}, popts) : at::Tensor();
      const dim3 grid(static_cast<unsigned>(rows),
                      static_cast<unsigned>(std::min<int64_t>(n_chunks, 65535)));
      auto* partial = cuda::elsa_ghost_partial_kernel<scalar_t, acc_t, KT, attn_t>;
      ELSA_LAUNCH(partial, grid, kThreads, stream, go, xp, ap,
                  need_gm ? part_gm.mutable_data_ptr<acc_t>() : nullptr,
                  need_ga ? part_ga.mutable_data_ptr<acc_t>() : nullptr, D, seg_len, chunk_len,
                  chunks_per_seg, n_chunks);
      sum_ghost_partials<scalar_t, acc_t>(part_gm, part_ga, ggm, gga, D, rows, n_chunks, stream);
    }
  });
}

// The generic backward on NCHW-contiguous inputs; gx / gattn contiguous. For the fused op it
// recomputes the probabilities from the logits into an acc_t buffer, runs the plain backward
// kernels on them (grad_attn into an acc_t grad_p buffer), then the softmax backward.
template <bool kLogits>
void generic_backward(const at::Tensor& go, const at::Tensor& x, const at::Tensor& attn,
                      const at::Tensor& ghost_mul, const at::Tensor& ghost_add, at::Tensor& gx,
                      at::Tensor& gattn, at::Tensor& ggm, at::Tensor& gga, const ElsaDims& D,
                      std::array<bool, 4> need, cudaStream_t stream) {
  const int64_t pixels = D.B * D.G * D.Ho * D.Wo;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(),
      kLogits ? "elsa_softmax_backward_cuda" : "elsa_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        // what the kernels read as the attention and write as its gradient
        using attn_t = std::conditional_t<kLogits, acc_t, scalar_t>;
        at::Tensor prob = attn, gprob = gattn;
        if constexpr (kLogits) {
          const auto aopts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
          prob = at::empty(attn.sizes(), aopts);
          if (pixels > 0) {
            auto* kernel = cuda::elsa_softmax_probs_kernel<scalar_t, acc_t>;
            ELSA_LAUNCH(kernel, blocks_for(pixels), kThreads, stream,
                        attn.const_data_ptr<scalar_t>(), prob.mutable_data_ptr<acc_t>(), D,
                        pixels);
          }
          gprob = need[1] ? at::empty(attn.sizes(), aopts) : at::Tensor();
        }
        launch_backward<scalar_t, attn_t, attn_t>(
            go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
            prob.const_data_ptr<attn_t>(), elsa_ptr_or_null<scalar_t>(ghost_mul),
            elsa_ptr_or_null<scalar_t>(ghost_add), mutable_or_null<scalar_t>(gx, need[0]),
            mutable_or_null<attn_t>(gprob, need[1]), ggm, gga, D, need[2], need[3], x.options(),
            stream);
        if constexpr (kLogits) {
          if (need[1] && pixels > 0) {
            auto* kernel = cuda::elsa_softmax_grad_kernel<scalar_t, acc_t>;
            ELSA_LAUNCH(kernel, blocks_for(pixels), kThreads, stream, prob.const_data_ptr<acc_t>(),
                        gprob.const_data_ptr<acc_t>(), gattn.mutable_data_ptr<scalar_t>(), D,
                        pixels);
          }
        }
      });
}

// ----------------------------------------------------------------- backward, tiled kernels
// grad_x and grad_attn (grad_logits when kLogits) in one kernel, then the row-chunk ghost
// reduction. For the fused op the probabilities are computed first, only when grad_x or
// grad_ghost_mul reads them (grad_logits recomputes its own pixel's in registers).
template <bool kLogits>
void tiled_backward(const ElsaDims& D, const tiled::Dims& T, const at::Tensor& go,
                    const at::Tensor& x, const at::Tensor& attn, const at::Tensor& ghost_mul,
                    const at::Tensor& ghost_add, at::Tensor& gx, at::Tensor& gattn,
                    at::Tensor& ggm, at::Tensor& gga, std::array<bool, 4> need,
                    cudaStream_t stream) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "elsa_tiled_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        // what grad_x and the ghost_mul sum read as the attention
        using attn_t = std::conditional_t<kLogits, acc_t, scalar_t>;
        at::Tensor a = attn;
        if constexpr (kLogits) {
          if (need[0] || need[2]) {
            a = at::empty(attn.sizes(), x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
            auto* kernel = tiled::elsa_tiled_probs_kernel<scalar_t, acc_t>;
            ELSA_LAUNCH(kernel, tiled::tile_grid(T), kThreads, stream,
                        attn.const_data_ptr<scalar_t>(), tiled::map5(attn),
                        a.mutable_data_ptr<acc_t>(), tiled::map5(a), T);
          }
        }
        const attn_t* ap = (!kLogits || need[0] || need[2]) ? a.const_data_ptr<attn_t>() : nullptr;
        const tiled::Map4 GO = tiled::map4(go), X = tiled::map4(x), no4{};
        const tiled::Map5 A = tiled::map5(a), no5{};  // no4 / no5: a gradient not computed
        if (need[0] || need[1]) {
          auto* kernel = tiled::elsa_tiled_backward_kernel<scalar_t, acc_t, attn_t, kLogits>;
          ELSA_LAUNCH(kernel, tiled::tile_grid(T), kThreads, stream, go.const_data_ptr<scalar_t>(),
                      GO, x.const_data_ptr<scalar_t>(), X, ap, A, attn.const_data_ptr<scalar_t>(),
                      tiled::map5(attn), elsa_ptr_or_null<scalar_t>(ghost_mul),
                      elsa_ptr_or_null<scalar_t>(ghost_add),
                      mutable_or_null<scalar_t>(gx, need[0]), need[0] ? tiled::map4(gx) : no4,
                      mutable_or_null<scalar_t>(gattn, need[1]),
                      need[1] ? tiled::map5(gattn) : no5, T);
        }
        if (!need[2] && !need[3]) return;
        if (T.C == 0) return;  // (0, 7, 7) ghost gradients: nothing to sum, and no empty grid
        const bool per_sample = ghost_grads_per_sample(D, need[2], need[3]);
        int seg_rows = 0, chunks_per_seg = 0;
        const int rows_per_chunk =
            tiled::ghost_rows_per_chunk(T, per_sample, &seg_rows, &chunks_per_seg);
        const int n_chunks = (per_sample ? T.B : 1) * chunks_per_seg;  // <= 65535
        const int64_t rows = int64_t(T.C) * tiled::kKK;
        const auto popts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
        at::Tensor part_gm = need[2] ? at::empty({rows, n_chunks}, popts) : at::Tensor();
        at::Tensor part_ga = need[3] ? at::empty({rows, n_chunks}, popts) : at::Tensor();
        auto* partial = tiled::elsa_tiled_ghost_partial_kernel<scalar_t, acc_t, attn_t>;
        ELSA_LAUNCH(partial, dim3(static_cast<unsigned>(T.C), static_cast<unsigned>(n_chunks)),
                    tiled::kGhostThreads, stream, go.const_data_ptr<scalar_t>(), GO,
                    x.const_data_ptr<scalar_t>(), X, ap, A,
                    need[2] ? part_gm.mutable_data_ptr<acc_t>() : nullptr,
                    need[3] ? part_ga.mutable_data_ptr<acc_t>() : nullptr, T, seg_rows,
                    rows_per_chunk, chunks_per_seg, n_chunks);
        sum_ghost_partials<scalar_t, acc_t>(part_gm, part_ga, ggm, gga, D, rows, n_chunks, stream);
      });
}

template <bool kLogits>
Grads backward_cuda(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& attn,
                    const at::Tensor& ghost_mul, const at::Tensor& ghost_add, const ElsaDims& D,
                    std::array<bool, 4> mask) {
  ELSA_DEVICE_GUARD(x);
  const auto need = elsa_grad_mask(mask, ghost_mul, ghost_add);
  at::Tensor gx, gattn, ggm, gga;
  std::tie(gx, gattn, ggm, gga) =
      elsa_empty_grads(x, attn, ghost_mul, ghost_add, need, elsa_cuda_nhwc(x, D));
  const cudaStream_t stream = ELSA_CURRENT_STREAM();
  tiled::Dims T;
  if (tiled::fast_path(D, {&grad_out, &x, &attn, &gx, &gattn, &ghost_mul, &ghost_add}, &T)) {
    tiled_backward<kLogits>(D, T, grad_out, x, attn, ghost_mul, ghost_add, gx, gattn, ggm, gga,
                            need, stream);
    return std::make_tuple(gx, gattn, ggm, gga);
  }
  const at::Tensor go = grad_out.contiguous(), xc = x.contiguous(), ac = attn.contiguous();
  at::Tensor gx_c = contiguous_target(gx), gattn_c = contiguous_target(gattn);
  generic_backward<kLogits>(go, xc, ac, ghost_mul, ghost_add, gx_c, gattn_c, ggm, gga, D, need,
                            stream);
  copy_back(gx, gx_c);
  copy_back(gattn, gattn_c);
  return std::make_tuple(gx, gattn, ggm, gga);
}

}  // namespace

at::Tensor elsa_forward_cuda(const at::Tensor& x, const at::Tensor& attn,
                             const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                             const ElsaDims& D, bool logits) {
  return logits ? forward_cuda<true>(x, attn, ghost_mul, ghost_add, D)
                : forward_cuda<false>(x, attn, ghost_mul, ghost_add, D);
}

Grads elsa_backward_cuda(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& attn,
                         const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                         const ElsaDims& D, std::array<bool, 4> mask, bool logits) {
  return logits ? backward_cuda<true>(grad_out, x, attn, ghost_mul, ghost_add, D, mask)
                : backward_cuda<false>(grad_out, x, attn, ghost_mul, ghost_add, D, mask);
}

}  // namespace mmelsa
