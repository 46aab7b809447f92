// Channels-last (NHWC) CPU path of the ELSA operator: layout preparation, the choice of
// instruction set, and the entries called by the ops' CPU kernels (elsa_cpu_ops.cpp).
//
// The kernels (elsa_cpu_nhwc_kernels.h) are compiled twice: for the baseline x86-64 ISA, and,
// with GCC on x86-64, once more under `#pragma GCC target("avx2,fma")`. The AVX2 copy runs
// only when the CPU reports AVX2 and FMA (checked at run time), so the extension still loads
// and runs on any x86-64 CPU, and no compiler flag of the whole build changes. Setting
// MMELSA_CPU_NO_AVX2=1 selects the baseline copy (used by the tests to check both).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "elsa_utils.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MMELSA_NHWC_AVX2 1
#endif

// The kernels pass 32-byte vectors between inline functions; in the baseline copy GCC warns that
// such a return would use another ABI without AVX. They are all inlined in this file, so no
// ABI boundary is involved.
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace mmelsa {
namespace nhwc_base {
#include "elsa_cpu_nhwc_kernels.h"
}  // namespace nhwc_base

#ifdef MMELSA_NHWC_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace nhwc_avx2 {
#include "elsa_cpu_nhwc_kernels.h"
}  // namespace nhwc_avx2
#pragma GCC pop_options
#endif

namespace {

bool use_avx2() {
#ifdef MMELSA_NHWC_AVX2
  static const bool cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const char* off = std::getenv("MMELSA_CPU_NO_AVX2");
  return cpu && !(off != nullptr && off[0] != '\0' && off[0] != '0');
#else
  return false;
#endif
}

// The ghosts as (K*K, C) tables in the accumulation type, so that a tap's weights are
// contiguous over the channels; a per-sample ghost as B such tables, (B, K*K, C), whose batch
// stride C * K*K is the ghost's own (ElsaDims::gm_bstride / ga_bstride). The additive table is
// zeros when there is no additive ghost (one code path); the multiplicative one stays undefined
// (the kernels skip the product).
at::ScalarType acc_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor ghost_table(const at::Tensor& ghost, const at::Tensor& x, const ElsaDims& D) {
  return ghost.reshape({-1, D.C, D.KK}).transpose(1, 2).to(acc_type(x)).contiguous();
}

at::Tensor add_table(const at::Tensor& ghost_add, const at::Tensor& x, const ElsaDims& D) {
  if (ghost_add.defined()) return ghost_table(ghost_add, x, D);
  return at::zeros({D.KK, D.C}, x.options().dtype(acc_type(x)));
}

// Sums the partials (parts, K*K, C), parts = B row-chunk groups of one sample each, over the
// parts in a fixed order into the ghost gradient: over all of them into (C, K, K) for a shared
// ghost, over each sample's own into (B, C, K, K) for a per-sample one.
void reduce_parts(const at::Tensor& part, at::Tensor& dst, const ElsaDims& D, bool per_sample) {
  const int64_t groups = per_sample ? D.B : 1;
  const int64_t per_group = part.size(0) / groups, KC = D.KK * D.C;
  const double* p = part.const_data_ptr<double>();
  at::Tensor acc = at::empty({groups, D.C, D.KK}, part.options());
  double* a = acc.mutable_data_ptr<double>();
  at::parallel_for(0, groups * KC, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, per_group)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t k = begin; k < end; ++k) {
                       const int64_t grp = k / KC, tc = k % KC;  // tc = t * C + c
                       const double* src = p + grp * per_group * KC + tc;
                       double s = 0.0;
                       for (int64_t q = 0; q < per_group; ++q) s += src[q * KC];
                       a[grp * KC + (tc % D.C) * D.KK + tc / D.C] = s;
                     }
                   });
  dst.copy_(acc.view(dst.sizes()));
}

// The attention (or logits) as a dense (B, Ho, Wo, G, K*K) tensor: no copy when it is already
// laid out so.
at::Tensor elsa_attn_pixel_major(const at::Tensor& attn) {
  return attn.permute({0, 3, 4, 1, 2}).contiguous();
}

}  // namespace

at::Tensor elsa_forward_cpu_nhwc(const at::Tensor& x, const at::Tensor& attn,
                                 const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                                 const ElsaDims& D, bool logits) {
  at::Tensor out =
      at::empty({D.B, D.C, D.Ho, D.Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) return out;
  const at::Tensor a = elsa_attn_pixel_major(attn);
  const at::Tensor gmT = ghost_mul.defined() ? ghost_table(ghost_mul, x, D) : at::Tensor();
  const at::Tensor gaT = add_table(ghost_add, x, D);
#ifdef MMELSA_NHWC_AVX2
  if (use_avx2()) {
    nhwc_avx2::forward(x, a, gmT, gaT, out, D, logits);
    return out;
  }
#endif
  nhwc_base::forward(x, a, gmT, gaT, out, D, logits);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> elsa_backward_cpu_nhwc(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& attn,
    const at::Tensor& ghost_mul, const at::Tensor& ghost_add, const ElsaDims& D,
    std::array<bool, 4> mask, bool logits) {
  const auto need = elsa_grad_mask(mask, ghost_mul, ghost_add);
  const auto opts = x.options();
  // grad_attn in the pixel-major layout the kernels write, seen as (B, G, K*K, Ho, Wo)
  at::Tensor gx, gattn, ggm, gga;
  std::tie(gx, gattn, ggm, gga) = elsa_empty_grads(x, attn, ghost_mul, ghost_add, need, true);
  if (grad_out.numel() == 0 || x.numel() == 0) {  // empty map: every gradient is zero
    for (at::Tensor* t : {&gx, &gattn, &ggm, &gga}) t->zero_();
    return std::make_tuple(gx, gattn, ggm, gga);
  }
  const at::Tensor go = grad_out.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor a = elsa_attn_pixel_major(attn);
  const at::Tensor gmT = ghost_mul.defined() ? ghost_table(ghost_mul, x, D) : at::Tensor();
  const at::Tensor gaT = add_table(ghost_add, x, D);
  const int64_t parts = D.B * ((D.Ho + nhwc_base::kRowsPerPart - 1) / nhwc_base::kRowsPerPart);
  const auto dopts = opts.dtype(at::kDouble);
  at::Tensor part_gm = need[2] ? at::empty({parts, D.KK, D.C}, dopts) : at::Tensor();
  at::Tensor part_ga = need[3] ? at::empty({parts, D.KK, D.C}, dopts) : at::Tensor();
  at::Tensor kx = need[0] ? gx : at::Tensor(), kattn = need[1] ? gattn : at::Tensor();
#ifdef MMELSA_NHWC_AVX2
  if (use_avx2())
    nhwc_avx2::backward(go, x, a, gmT, gaT, kx, kattn, part_gm, part_ga, D, logits);
  else
#endif
    nhwc_base::backward(go, x, a, gmT, gaT, kx, kattn, part_gm, part_ga, D, logits);
  if (need[2]) reduce_parts(part_gm, ggm, D, D.gm_bstride != 0);
  if (need[3]) reduce_parts(part_ga, gga, D, D.ga_bstride != 0);
  return std::make_tuple(gx, gattn, ggm, gga);
}

}  // namespace mmelsa
