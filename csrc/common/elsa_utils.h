// Shared pieces of the ELSA operators: the problem sizes, index math, the layout rules and the
// per-device entry points. Included by the ops' kernels of each dispatch key (csrc/pytorch/cpu/
// elsa_cpu_ops.cpp, csrc/pytorch/cuda/elsa_cuda_ops.cpp), the CPU kernels, the CUDA launchers
// and kernels, and the CUDA emulator (tests/ops/cuda_emulation/).
//
//   out[b, c, i, j] = sum_{u, v < K} x[b, c, i*s + (u - K/2)*d, j*s + (v - K/2)*d]
//                     * (ghost_mul[c, u, v] * attn[b, c / (C/G), u*K + v, i, j]
//                        + ghost_add[c, u, v])
//
// with zero padding (taps outside the image contribute nothing), Ho = (H - 1) / s + 1. Each
// ghost is optional (absent: ones / zeros) and either shared by the batch, (C, K, K), or one per
// sample, (B, C, K, K), read as ghost[b, c, u, v] (DDF's channel filter is a per-sample
// ghost_mul or ghost_add). The kernels read a ghost at b * batch stride + c * K*K + tap, the
// batch stride 0 for a shared ghost (ElsaDims::gm_bstride / ga_bstride); the gradient of a
// per-sample ghost is per sample too, that of a shared one summed over the batch.
//
// The fused variant (elsa_softmax_*; `logits` = true below) takes pre-softmax logits in place of
// attn and uses
//   attn[b, g, t, i, j] = softmax over the K*K taps t of logits[b, g, :, i, j]
// computed in the accumulation type (float for half / bfloat16 / float, double for double). Its
// backward recomputes the probabilities and returns the gradient with respect to the logits.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <tuple>

namespace mmelsa {

// Problem sizes, all 64-bit so that products used as offsets never overflow.
struct ElsaDims {
  int64_t B, C, G, H, W, Ho, Wo;
  int64_t K, KK, pad, dil, stride;
  int64_t cpg;  // channels per group, C / G
  // Element distance between two samples' rows of ghost_mul / ghost_add: C * K*K for a
  // per-sample ghost (B, C, K, K), 0 for a shared (C, K, K) or absent one.
  int64_t gm_bstride, ga_bstride;
};

// Output extent of one spatial axis: "same" padding, so only the stride shrinks the map.
inline int64_t elsa_out_size(int64_t in, int64_t stride) {
  return in <= 0 ? 0 : (in - 1) / stride + 1;
}

// Whether a ghost is one per sample, (B, C, K, K), rather than shared by the batch, (C, K, K).
inline bool elsa_ghost_per_sample(const c10::optional<at::Tensor>& ghost) {
  return ghost.has_value() && ghost->defined() && ghost->dim() == 4;
}

// The sizes of the problem of x (B, C, H, W), an attention map (B, G, K*K, Ho, Wo) and the
// ghosts (for their batch strides): the one place they are derived. The caller has checked
// that G >= 1 divides C (and, before a kernel runs, the ghosts' shapes).
inline ElsaDims elsa_dims(const at::Tensor& x, const at::Tensor& attn, int64_t kernel_size,
                          int64_t dilation, int64_t stride,
                          const c10::optional<at::Tensor>& ghost_mul = c10::nullopt,
                          const c10::optional<at::Tensor>& ghost_add = c10::nullopt) {
  ElsaDims D;
  D.B = x.size(0);
  D.C = x.size(1);
  D.H = x.size(2);
  D.W = x.size(3);
  D.G = attn.size(1);
  D.K = kernel_size;
  D.KK = kernel_size * kernel_size;
  D.dil = dilation;
  D.stride = stride;
  D.pad = (kernel_size / 2) * dilation;
  D.Ho = elsa_out_size(D.H, stride);
  D.Wo = elsa_out_size(D.W, stride);
  D.cpg = D.C / D.G;
  D.gm_bstride = elsa_ghost_per_sample(ghost_mul) ? D.C * D.KK : 0;
  D.ga_bstride = elsa_ghost_per_sample(ghost_add) ? D.C * D.KK : 0;
  return D;
}

// Roughly how many multiply-adds a CPU kernel's parallel_for task should hold before it is worth
// a thread: the grain for items of `work_per_item` multiply-adds each.
inline int64_t grain_for(int64_t work_per_item) {
  constexpr int64_t kGrainWork = 1 << 15;
  return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, work_per_item));
}

// First and one-past-last output index o in [0, out) whose tap o*s + off lands in [0, in).
// Used by the CPU kernels to hoist the zero-padding test out of the inner loops.
inline void elsa_valid_range(int64_t off, int64_t in, int64_t out, int64_t s, int64_t* lo,
                             int64_t* hi) {
  // o*s + off >= 0  <=>  o >= ceil(-off / s)
  int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
  // o*s + off <= in - 1  <=>  o <= floor((in - 1 - off) / s)
  int64_t r = in - 1 - off;
  int64_t h = r < 0 ? 0 : r / s + 1;
  if (h > out) h = out;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

// ---- per-device implementations (inputs already checked and contiguous); logits: the fused op
at::Tensor elsa_forward_cpu(const at::Tensor& x, const at::Tensor& attn,
                            const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                            const ElsaDims& dims, bool logits);

// Returns (grad_x, grad_attn, grad_ghost_mul, grad_ghost_add); an entry not asked for in
// output_mask (or whose ghost is absent) is an empty (0,) tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> elsa_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& attn,
    const at::Tensor& ghost_mul, const at::Tensor& ghost_add, const ElsaDims& dims,
    std::array<bool, 4> output_mask, bool logits);

// ---- the channels-last path (CPU: csrc/pytorch/cpu/elsa_cpu_nhwc.cpp; CUDA: the tiled
// kernels of csrc/common/cuda/elsa_tiled_kernel.cuh) ----
// Taken when x's channels are innermost (stride(1) == 1, C > 1) and x is not NCHW-contiguous
// (a channels_last tensor, or a channel slice of a wider one, which is read in place), on the
// CPU always, on CUDA for the tiled configuration (K = 7, stride 1, dilation 1). The output and
// grad_x are then channels_last, grad_attn is laid out (B, Ho, Wo, G, K*K) (the layout of a 1x1
// conv's channels_last output reshaped to (B, G, K*K, H, W)). Every other input keeps the NCHW
// kernels (made contiguous first). mmelsa.ops.channels_last_path mirrors this rule (the two
// functions below, one per device) for the fake (meta) kernels: change both together.
inline bool elsa_channels_inner(const at::Tensor& x) {
  return x.dim() == 4 && x.size(1) > 1 && x.stride(1) == 1 && !x.is_contiguous();
}
// The rule on the CPU.
inline bool elsa_cpu_nhwc(const at::Tensor& x) { return elsa_channels_inner(x); }
// The rule on CUDA (also what the emulated CUDA launchers use, whose tensors are on the CPU).
inline bool elsa_cuda_nhwc(const at::Tensor& x, const ElsaDims& D) {
  return elsa_channels_inner(x) && D.K == 7 && D.stride == 1 && D.dil == 1;
}

// x: channels innermost, any other strides; attn / ghosts: any layout. `logits`: the fused op.
at::Tensor elsa_forward_cpu_nhwc(const at::Tensor& x, const at::Tensor& attn,
                                 const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                                 const ElsaDims& dims, bool logits);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> elsa_backward_cpu_nhwc(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& attn,
    const at::Tensor& ghost_mul, const at::Tensor& ghost_add, const ElsaDims& dims,
    std::array<bool, 4> output_mask, bool logits);

#ifdef MMELSA_WITH_CUDA
at::Tensor elsa_forward_cuda(const at::Tensor& x, const at::Tensor& attn,
                             const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                             const ElsaDims& dims, bool logits);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> elsa_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& attn,
    const at::Tensor& ghost_mul, const at::Tensor& ghost_add, const ElsaDims& dims,
    std::array<bool, 4> output_mask, bool logits);
#endif

// How the ops' kernels hand their arguments to the per-device implementations (and the CUDA
// emulator to the launchers): a ghost contiguous, undefined when absent; a map as it is on the
// channels-last path (read in place), NCHW-contiguous otherwise.
inline at::Tensor elsa_ghost_arg(const c10::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? t->contiguous() : at::Tensor();
}
inline at::Tensor elsa_map_arg(const at::Tensor& t, bool nhwc) {
  return nhwc ? t : t.contiguous();
}

// A ghost's data, nullptr when it is absent.
template <typename scalar_t>
const scalar_t* elsa_ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

// Which gradients a backward computes: those asked for in `mask`, less those of an absent
// ghost.
inline std::array<bool, 4> elsa_grad_mask(std::array<bool, 4> mask, const at::Tensor& ghost_mul,
                                          const at::Tensor& ghost_add) {
  return {mask[0], mask[1], mask[2] && ghost_mul.defined(), mask[3] && ghost_add.defined()};
}

// The four gradient tensors of a backward (x, attn or logits, ghost_mul, ghost_add),
// uninitialised. Those not computed are distinct (0,) tensors: the outputs of an op must not
// alias. nhwc: the layouts of the channels-last path (grad_x channels_last, grad_attn
// (B, Ho, Wo, G, K*K) seen as (B, G, K*K, Ho, Wo)); else like x and attn.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> elsa_empty_grads(
    const at::Tensor& x, const at::Tensor& attn, const at::Tensor& ghost_mul,
    const at::Tensor& ghost_add, std::array<bool, 4> need, bool nhwc = false) {
  const auto opts = x.options();
  auto none = [&] { return at::empty({0}, opts); };
  auto like = [&](bool wanted, const at::Tensor& t) {
    return wanted ? at::empty_like(t, at::MemoryFormat::Contiguous) : none();
  };
  at::Tensor gx, gattn;
  if (nhwc) {
    gx = need[0] ? at::empty(x.sizes(), opts.memory_format(at::MemoryFormat::ChannelsLast))
                 : none();
    gattn = need[1]
                ? at::empty({attn.size(0), attn.size(3), attn.size(4), attn.size(1), attn.size(2)},
                            opts)
                      .permute({0, 3, 4, 1, 2})
                : none();
  } else {
    gx = like(need[0], x);
    gattn = like(need[1], attn);
  }
  return std::make_tuple(gx, gattn, like(need[2], ghost_mul), like(need[3], ghost_add));
}

}  // namespace mmelsa
