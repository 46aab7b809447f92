// CPU kernels of the ELSA operator (forward and backward), threaded with at::parallel_for.
//
// Memory stays proportional to the tensors: no unfolded (K*K times larger) temporary. Each
// thread keeps at most one output row / one channel plane of accumulators in the accumulation
// type (float for float / half / bfloat16, double for double).
//
// forward      parallel over (b, c): out[b, c] is a sum of K*K shifted, weighted copies of
//              x[b, c].
// backward A   parallel over (b, c): grad_x[b, c] by a scatter that only this thread writes,
//              and per-(b, c) partial sums of the ghost gradients.
// backward B   parallel over (b, g, row i): grad_attn[b, g, :, i, :], summed over the channels of
//              head g; every task writes a disjoint slice.
// The gradient of a shared ghost is the per-(b, c) partials summed over b in a fixed order, that
// of a per-sample ghost the partials themselves: the result does not depend on the number of
// threads (deterministic).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "elsa_utils.h"

namespace mmelsa {
namespace {

// Valid output-column range for every tap column v (the padding test hoisted out of the loops).
struct TapRanges {
  std::vector<int64_t> lo, hi, off;
  TapRanges(int64_t K, int64_t pad, int64_t dil, int64_t in, int64_t out, int64_t s)
      : lo(K), hi(K), off(K) {
    for (int64_t v = 0; v < K; ++v) {
      off[v] = v * dil - pad;
      elsa_valid_range(off[v], in, out, s, &lo[v], &hi[v]);
    }
  }
};

template <typename scalar_t>
void forward_kernel(const scalar_t* x, const scalar_t* attn, const scalar_t* gm,
                    const scalar_t* ga, scalar_t* out, const ElsaDims& D) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = D.H * D.W, HoWo = D.Ho * D.Wo, K = D.K, KK = D.KK, s = D.stride;
  const TapRanges cols(K, D.pad, D.dil, D.W, D.Wo, s);
  at::parallel_for(0, D.B * D.C, grain_for(HoWo * KK), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(D.Wo), wm(KK), wa(KK);
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / D.C, c = bc % D.C, g = c / D.cpg;
      const scalar_t* xp = x + bc * HW;
      const scalar_t* ap = attn + (b * D.G + g) * KK * HoWo;
      scalar_t* op = out + bc * HoWo;
      for (int64_t t = 0; t < KK; ++t) {
        wm[t] = gm ? static_cast<acc_t>(gm[b * D.gm_bstride + c * KK + t]) : acc_t(1);
        wa[t] = ga ? static_cast<acc_t>(ga[b * D.ga_bstride + c * KK + t]) : acc_t(0);
      }
      for (int64_t i = 0; i < D.Ho; ++i) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t u = 0; u < K; ++u) {
          const int64_t y = i * s + u * D.dil - D.pad;
          if (y < 0 || y >= D.H) continue;
          const scalar_t* xrow = xp + y * D.W;
          for (int64_t v = 0; v < K; ++v) {
            const int64_t t = u * K + v, off = cols.off[v];
            const scalar_t* arow = ap + t * HoWo + i * D.Wo;
            const acc_t m = wm[t], a0 = wa[t];
            acc_t* accp = acc.data();
            if (s == 1) {
              for (int64_t j = cols.lo[v]; j < cols.hi[v]; ++j)
                accp[j] +=
                    static_cast<acc_t>(xrow[j + off]) * (m * static_cast<acc_t>(arow[j]) + a0);
            } else {
              for (int64_t j = cols.lo[v]; j < cols.hi[v]; ++j)
                accp[j] +=
                    static_cast<acc_t>(xrow[j * s + off]) * (m * static_cast<acc_t>(arow[j]) + a0);
            }
          }
        }
        for (int64_t j = 0; j < D.Wo; ++j) op[i * D.Wo + j] = static_cast<scalar_t>(acc[j]);
      }
    }
  });
}

// Pass A: grad_x[b, c] (scatter into a thread-private plane) and the ghost partials of (b, c).
// attn_t is scalar_t for the plain op; the fused op passes its probabilities in acc_t (fp32),
// so that they are not rounded to the input dtype.
template <typename scalar_t, typename attn_t = scalar_t>
void backward_x_ghost_kernel(const scalar_t* gout, const scalar_t* x, const attn_t* attn,
                             const scalar_t* gm, const scalar_t* ga, scalar_t* gx, double* part_gm,
                             double* part_ga, const ElsaDims& D) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = D.H * D.W, HoWo = D.Ho * D.Wo, K = D.K, KK = D.KK, s = D.stride;
  const TapRanges cols(K, D.pad, D.dil, D.W, D.Wo, s);
  const bool need_x = gx != nullptr;
  at::parallel_for(0, D.B * D.C, grain_for(HoWo * KK), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> plane(need_x ? HW : 0), wm(KK), wa(KK);
    std::vector<acc_t> col_t(part_ga ? KK * D.Wo : 0), col_ta(part_gm ? KK * D.Wo : 0);
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / D.C, c = bc % D.C, g = c / D.cpg;
      const scalar_t* xp = x + bc * HW;
      const scalar_t* gp = gout + bc * HoWo;
      const attn_t* ap = attn + (b * D.G + g) * KK * HoWo;
      for (int64_t t = 0; t < KK; ++t) {
        wm[t] = gm ? static_cast<acc_t>(gm[b * D.gm_bstride + c * KK + t]) : acc_t(1);
        wa[t] = ga ? static_cast<acc_t>(ga[b * D.ga_bstride + c * KK + t]) : acc_t(0);
      }
      if (need_x) std::fill(plane.begin(), plane.end(), acc_t(0));
      std::fill(col_t.begin(), col_t.end(), acc_t(0));
      std::fill(col_ta.begin(), col_ta.end(), acc_t(0));
      for (int64_t i = 0; i < D.Ho; ++i) {
        const scalar_t* grow = gp + i * D.Wo;
        for (int64_t u = 0; u < K; ++u) {
          const int64_t y = i * s + u * D.dil - D.pad;
          if (y < 0 || y >= D.H) continue;
          const scalar_t* xrow = xp + y * D.W;
          for (int64_t v = 0; v < K; ++v) {
            const int64_t t = u * K + v, off = cols.off[v], lo = cols.lo[v], hi = cols.hi[v];
            const attn_t* arow = ap + t * HoWo + i * D.Wo;
            if (need_x) {
              acc_t* prow = plane.data() + y * D.W;
              const acc_t m = wm[t], a0 = wa[t];
              if (s == 1) {  // unit stride: contiguous, vectorisable
                for (int64_t j = lo; j < hi; ++j)
                  prow[j + off] +=
                      static_cast<acc_t>(grow[j]) * (m * static_cast<acc_t>(arow[j]) + a0);
              } else {
                for (int64_t j = lo; j < hi; ++j)
                  prow[j * s + off] +=
                      static_cast<acc_t>(grow[j]) * (m * static_cast<acc_t>(arow[j]) + a0);
              }
            }
            // Ghost partials: column-wise accumulators (element-wise adds vectorise, a scalar
            // float reduction would not), summed over the columns in double at the end.
            if (part_ga) {
              acc_t* dst = col_t.data() + t * D.Wo;
              if (s == 1) {
                for (int64_t j = lo; j < hi; ++j)
                  dst[j] += static_cast<acc_t>(grow[j]) * static_cast<acc_t>(xrow[j + off]);
              } else {
                for (int64_t j = lo; j < hi; ++j)
                  dst[j] += static_cast<acc_t>(grow[j]) * static_cast<acc_t>(xrow[j * s + off]);
              }
            }
            if (part_gm) {
              acc_t* dst = col_ta.data() + t * D.Wo;
              for (int64_t j = lo; j < hi; ++j)
                dst[j] += static_cast<acc_t>(grow[j]) * static_cast<acc_t>(xrow[j * s + off]) *
                          static_cast<acc_t>(arow[j]);
            }
          }
        }
      }
      if (need_x) {
        scalar_t* gxp = gx + bc * HW;
        for (int64_t k = 0; k < HW; ++k) gxp[k] = static_cast<scalar_t>(plane[k]);
      }
      for (int64_t t = 0; t < KK; ++t) {
        if (part_ga) {
          double acc = 0.0;
          for (int64_t j = 0; j < D.Wo; ++j) acc += col_t[t * D.Wo + j];
          part_ga[bc * KK + t] = acc;
        }
        if (part_gm) {
          double acc = 0.0;
          for (int64_t j = 0; j < D.Wo; ++j) acc += col_ta[t * D.Wo + j];
          part_gm[bc * KK + t] = acc;
        }
      }
    }
  });
}

// Pass B: grad_attn[b, g, :, i, :] = sum over channels c of head g of
//         ghost_mul[(b,) c, t] * grad_out[b, c, i, :] * x[b, c, tap rows / cols].
// With `prob` (the fused op: the softmax probabilities, (B, G, K*K, Ho, Wo) in acc_t) the row is
// turned into the gradient of the logits before it is written, while it is still in the
// accumulation type: grad_logit_t = p_t * (grad_p_t - sum_u p_u * grad_p_u).
template <typename scalar_t>
void backward_attn_kernel(const scalar_t* gout, const scalar_t* x, const scalar_t* gm,
                          scalar_t* gattn, const ElsaDims& D,
                          const at::opmath_type<scalar_t>* prob = nullptr) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = D.H * D.W, HoWo = D.Ho * D.Wo, K = D.K, KK = D.KK, s = D.stride;
  const TapRanges cols(K, D.pad, D.dil, D.W, D.Wo, s);
  at::parallel_for(
      0, D.B * D.G * D.Ho, grain_for(D.cpg * KK * D.Wo), [&](int64_t begin, int64_t end) {
        std::vector<acc_t> buf(KK * D.Wo), wm(KK), dot(prob ? D.Wo : 0);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t i = task % D.Ho, bg = task / D.Ho, b = bg / D.G, g = bg % D.G;
          std::fill(buf.begin(), buf.end(), acc_t(0));
          for (int64_t c = g * D.cpg; c < (g + 1) * D.cpg; ++c) {
            const int64_t bc = b * D.C + c;
            const scalar_t* grow = gout + bc * HoWo + i * D.Wo;
            const scalar_t* xp = x + bc * HW;
            for (int64_t t = 0; t < KK; ++t)
              wm[t] = gm ? static_cast<acc_t>(gm[b * D.gm_bstride + c * KK + t]) : acc_t(1);
            for (int64_t u = 0; u < K; ++u) {
              const int64_t y = i * s + u * D.dil - D.pad;
              if (y < 0 || y >= D.H) continue;
              const scalar_t* xrow = xp + y * D.W;
              for (int64_t v = 0; v < K; ++v) {
                const int64_t t = u * K + v, off = cols.off[v];
                const acc_t m = wm[t];
                acc_t* dst = buf.data() + t * D.Wo;
                if (s == 1) {  // unit stride: contiguous, vectorisable
                  for (int64_t j = cols.lo[v]; j < cols.hi[v]; ++j)
                    dst[j] += m * static_cast<acc_t>(grow[j]) * static_cast<acc_t>(xrow[j + off]);
                } else {
                  for (int64_t j = cols.lo[v]; j < cols.hi[v]; ++j)
                    dst[j] +=
                        m * static_cast<acc_t>(grow[j]) * static_cast<acc_t>(xrow[j * s + off]);
                }
              }
            }
          }
          if (prob) {
            const acc_t* prow = prob + bg * KK * HoWo + i * D.Wo;
            std::fill(dot.begin(), dot.end(), acc_t(0));
            for (int64_t t = 0; t < KK; ++t)
              for (int64_t j = 0; j < D.Wo; ++j) dot[j] += prow[t * HoWo + j] * buf[t * D.Wo + j];
            for (int64_t t = 0; t < KK; ++t)
              for (int64_t j = 0; j < D.Wo; ++j)
                buf[t * D.Wo + j] = prow[t * HoWo + j] * (buf[t * D.Wo + j] - dot[j]);
          }
          scalar_t* out = gattn + bg * KK * HoWo + i * D.Wo;
          for (int64_t t = 0; t < KK; ++t)
            for (int64_t j = 0; j < D.Wo; ++j)
              out[t * HoWo + j] = static_cast<scalar_t>(buf[t * D.Wo + j]);
        }
      });
}

// The ghost gradient from the per-(b, c) partials: for a shared ghost (C, K, K) they are summed
// over b in a fixed order; a per-sample ghost's (B, C, K, K) gradient is the partials
// themselves.
template <typename scalar_t>
void reduce_ghost_partials(const double* part, scalar_t* dst, const ElsaDims& D, bool per_sample) {
  const int64_t CKK = D.C * D.KK;
  if (per_sample) {
    at::parallel_for(0, D.B * CKK, grain_for(1), [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) dst[k] = static_cast<scalar_t>(part[k]);
    });
    return;
  }
  at::parallel_for(0, CKK, grain_for(D.B), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      double acc = 0.0;
      for (int64_t b = 0; b < D.B; ++b) acc += part[b * CKK + k];
      dst[k] = static_cast<scalar_t>(acc);
    }
  });
}

// ---------------------------------------------------------------- fused softmax + ELSA
// GCC does not vectorise the clamp of exp_shifted (elsa_cpu_exp.h) unless it may assume that
// float comparisons do not trap; that changes no value, so it is allowed for the softmax only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif
#include "elsa_cpu_exp.h"

// Softmax over the K*K taps of one row (b, g, i) of logits, in acc_t: lrow points at
// logits[b, g, 0, i, 0] (taps HoWo apart); p receives the probabilities, taps p_stride apart.
// Every loop runs along the row (contiguous), so the compiler vectorises them all.
// mx and inv are Wo-long scratch rows.
template <typename scalar_t, typename acc_t>
void softmax_taps_row(const scalar_t* lrow, int64_t KK, int64_t HoWo, int64_t Wo, acc_t* p,
                      int64_t p_stride, acc_t* mx, acc_t* inv) {
  for (int64_t j = 0; j < Wo; ++j) mx[j] = static_cast<acc_t>(lrow[j]);
  for (int64_t t = 1; t < KK; ++t) {
    const scalar_t* l = lrow + t * HoWo;
    // a ternary, not std::max: a function compiled outside this pragma region is not inlined
    for (int64_t j = 0; j < Wo; ++j) {
      const acc_t v = static_cast<acc_t>(l[j]);
      mx[j] = mx[j] < v ? v : mx[j];
    }
  }
  std::fill(inv, inv + Wo, acc_t(0));
  for (int64_t t = 0; t < KK; ++t) {
    const scalar_t* l = lrow + t * HoWo;
    acc_t* pt = p + t * p_stride;
    // three simple passes, each of which GCC vectorises (the fused loop it does not)
    for (int64_t j = 0; j < Wo; ++j) pt[j] = static_cast<acc_t>(l[j]) - mx[j];
    for (int64_t j = 0; j < Wo; ++j) pt[j] = exp_shifted(pt[j]);
    for (int64_t j = 0; j < Wo; ++j) inv[j] += pt[j];
  }
  for (int64_t j = 0; j < Wo; ++j) inv[j] = acc_t(1) / inv[j];
  for (int64_t t = 0; t < KK; ++t) {
    acc_t* pt = p + t * p_stride;
    for (int64_t j = 0; j < Wo; ++j) pt[j] *= inv[j];
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

// Column blocks of the fused forward: the accumulators of kFusedCols outputs stay in registers /
// L1 across all K*K taps (measured on the 2-core machine: 16 columns were slower than the
// plain row loop, 64 and 128 faster). The rest of a row (Wo % kFusedCols) is done in blocks of
// kFusedTail, so that at most kFusedTail - 1 padded columns are computed for nothing.
constexpr int64_t kFusedCols = 128;
constexpr int64_t kFusedTail = 32;

// out[j0 .. j0 + n) of one channel row: sum over the taps of xpad * (m * p + a0), with
// xpad the channel's K zero-padded input rows (no bounds tests) and p the row's probabilities.
// The accumulators are a local array (not memory the loads could alias), so they live in
// registers; n <= kFusedCols outputs are written to orow[j0 ..].
template <int64_t cols, typename scalar_t, typename acc_t, bool unit_stride>
inline void fused_block(const acc_t* xpad, int64_t xw, const uint8_t* row_ok, const acc_t* p,
                        int64_t pw, const acc_t* wm, const acc_t* wa, int64_t K, int64_t dil,
                        int64_t s, int64_t j0, int64_t n, scalar_t* orow) {
  acc_t acc[cols];
  for (int64_t jj = 0; jj < cols; ++jj) acc[jj] = acc_t(0);
  for (int64_t u = 0; u < K; ++u) {
    if (!row_ok[u]) continue;
    for (int64_t v = 0; v < K; ++v) {
      const int64_t t = u * K + v;
      const acc_t* xr = xpad + u * xw + j0 * s + v * dil;
      const acc_t* pr = p + t * pw + j0;
      const acc_t m = wm[t], a0 = wa[t];
      for (int64_t jj = 0; jj < cols; ++jj)
        acc[jj] += xr[unit_stride ? jj : jj * s] * (m * pr[jj] + a0);
    }
  }
  for (int64_t jj = 0; jj < n; ++jj) orow[j0 + jj] = static_cast<scalar_t>(acc[jj]);
}

// Fused forward, parallel over rows (b, g, i) (not over (b, c) as the plain forward): a task
// takes the softmax of its row of logits once into a K*K x Wo buffer and then runs the
// channels of head g over it. The probabilities of a row (49 x Wo fp32, 65 KB at Wo = 334) stay
// in cache for the head's channels, and the logits are read from memory once, where the plain
// forward streams the whole attention plane once per channel. Per channel, the K input rows are
// copied once into zero-padded acc_t rows (converted once instead of once per tap, and no
// bounds tests in the inner loop), and outputs are accumulated kFusedCols at a time in
// registers over all taps. A tap outside the image contributes 0 * weight (the plain forward
// skips it): the same sum unless a weight is infinite or NaN.
template <typename scalar_t>
void softmax_forward_kernel(const scalar_t* x, const scalar_t* logits, const scalar_t* gm,
                            const scalar_t* ga, scalar_t* out, const ElsaDims& D) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = D.H * D.W, HoWo = D.Ho * D.Wo, K = D.K, KK = D.KK, s = D.stride;
  // probabilities and padded rows cover whole blocks of columns; the extra columns are zeros
  const int64_t pw = (D.Wo + kFusedTail - 1) / kFusedTail * kFusedTail;
  const int64_t xw = (pw - 1) * s + (K - 1) * D.dil + 1;
  at::parallel_for(
      0, D.B * D.G * D.Ho, grain_for(D.cpg * KK * D.Wo), [&](int64_t begin, int64_t end) {
        std::vector<acc_t> p(KK * pw, acc_t(0)), mx(D.Wo), inv(D.Wo), xpad(K * xw);
        std::vector<acc_t> wm(KK), wa(KK);
        std::vector<uint8_t> row_ok(K);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t i = task % D.Ho, bg = task / D.Ho, b = bg / D.G, g = bg % D.G;
          softmax_taps_row(logits + bg * KK * HoWo + i * D.Wo, KK, HoWo, D.Wo, p.data(), pw,
                           mx.data(), inv.data());
          for (int64_t c = g * D.cpg; c < (g + 1) * D.cpg; ++c) {
            const int64_t bc = b * D.C + c;
            for (int64_t t = 0; t < KK; ++t) {
              wm[t] = gm ? static_cast<acc_t>(gm[b * D.gm_bstride + c * KK + t]) : acc_t(1);
              wa[t] = ga ? static_cast<acc_t>(ga[b * D.ga_bstride + c * KK + t]) : acc_t(0);
            }
            for (int64_t u = 0; u < K; ++u) {
              const int64_t y = i * s + u * D.dil - D.pad;
              row_ok[u] = y >= 0 && y < D.H;
              if (!row_ok[u]) continue;
              const scalar_t* xrow = x + bc * HW + y * D.W;
              acc_t* dst = xpad.data() + u * xw;
              // dst[k] = x[y, k - pad] inside the image, 0 outside
              const int64_t lo = std::min(D.pad, xw), hi = std::min(D.pad + D.W, xw);
              std::fill(dst, dst + lo, acc_t(0));
              for (int64_t k = lo; k < hi; ++k) dst[k] = static_cast<acc_t>(xrow[k - D.pad]);
              std::fill(dst + hi, dst + xw, acc_t(0));
            }
            scalar_t* orow = out + bc * HoWo + i * D.Wo;
            auto block = [&](auto cols, int64_t j0) {
              constexpr int64_t n_cols = decltype(cols)::value;
              const int64_t n = std::min(n_cols, D.Wo - j0);
              if (s == 1)
                fused_block<n_cols, scalar_t, acc_t, true>(xpad.data(), xw, row_ok.data(),
                                                           p.data(), pw, wm.data(), wa.data(), K,
                                                           D.dil, s, j0, n, orow);
              else
                fused_block<n_cols, scalar_t, acc_t, false>(xpad.data(), xw, row_ok.data(),
                                                            p.data(), pw, wm.data(), wa.data(), K,
                                                            D.dil, s, j0, n, orow);
            };
            int64_t j0 = 0;
            for (; j0 + kFusedCols <= D.Wo; j0 += kFusedCols)
              block(std::integral_constant<int64_t, kFusedCols>(), j0);
            for (; j0 < D.Wo; j0 += kFusedTail)
              block(std::integral_constant<int64_t, kFusedTail>(), j0);
          }
        }
      });
}

// The probabilities of all rows, (B, G, K*K, Ho, Wo) in acc_t, for the fused backward.
template <typename scalar_t>
void softmax_probs_kernel(const scalar_t* logits, at::opmath_type<scalar_t>* prob,
                          const ElsaDims& D) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HoWo = D.Ho * D.Wo, KK = D.KK;
  at::parallel_for(0, D.B * D.G * D.Ho, grain_for(3 * KK * D.Wo), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> mx(D.Wo), inv(D.Wo);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task % D.Ho, bg = task / D.Ho;
      const int64_t off = bg * KK * HoWo + i * D.Wo;
      softmax_taps_row(logits + off, KK, HoWo, D.Wo, prob + off, HoWo, mx.data(), inv.data());
    }
  });
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// kLogits: the fused op (attn holds logits).
template <bool kLogits>
at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& attn, const at::Tensor& ghost_mul,
                       const at::Tensor& ghost_add, const ElsaDims& D) {
  at::Tensor out = at::empty({D.B, D.C, D.Ho, D.Wo}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(),
      kLogits ? "elsa_softmax_forward_cpu" : "elsa_forward_cpu", [&] {
        auto* kernel = kLogits ? softmax_forward_kernel<scalar_t> : forward_kernel<scalar_t>;
        kernel(x.const_data_ptr<scalar_t>(), attn.const_data_ptr<scalar_t>(),
               elsa_ptr_or_null<scalar_t>(ghost_mul), elsa_ptr_or_null<scalar_t>(ghost_add),
               out.mutable_data_ptr<scalar_t>(), D);
      });
  return out;
}

// The fused backward recomputes the probabilities once into an acc_t buffer of the logits'
// shape (pass A needs them at every tap of every channel plane), runs the plain backward's
// passes on it, and folds the softmax backward into pass B.
template <bool kLogits>
Grads backward_cpu(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& attn,
                   const at::Tensor& ghost_mul, const at::Tensor& ghost_add, const ElsaDims& D,
                   std::array<bool, 4> mask) {
  const auto need = elsa_grad_mask(mask, ghost_mul, ghost_add);
  const bool need_x = need[0], need_attn = need[1], need_gm = need[2], need_ga = need[3];
  at::Tensor gx, gattn, ggm, gga;
  std::tie(gx, gattn, ggm, gga) = elsa_empty_grads(x, attn, ghost_mul, ghost_add, need);
  const auto dopts = x.options().dtype(at::kDouble);
  at::Tensor part_gm = need_gm ? at::empty({D.B, D.C, D.KK}, dopts) : at::Tensor();
  at::Tensor part_ga = need_ga ? at::empty({D.B, D.C, D.KK}, dopts) : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(),
      kLogits ? "elsa_softmax_backward_cpu" : "elsa_backward_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        // what passes A and B read as the attention: the probabilities for the fused op
        using attn_t = std::conditional_t<kLogits, acc_t, scalar_t>;
        const scalar_t* go = grad_out.const_data_ptr<scalar_t>();
        const scalar_t* xp = x.const_data_ptr<scalar_t>();
        const scalar_t* gmp = elsa_ptr_or_null<scalar_t>(ghost_mul);
        const scalar_t* gap = elsa_ptr_or_null<scalar_t>(ghost_add);
        const bool any = need_x || need_gm || need_ga || need_attn;
        at::Tensor a = attn;
        if constexpr (kLogits) {
          // Pass A (grad_x, grad_ghost_mul) and pass B (grad_logits) read the probabilities;
          // pass A takes a valid pointer even when it computes only grad_ghost_add.
          if (any) {
            a = at::empty(attn.sizes(), x.options().dtype(c10::CppTypeToScalarType<acc_t>()));
            softmax_probs_kernel<scalar_t>(attn.const_data_ptr<scalar_t>(),
                                           a.mutable_data_ptr<acc_t>(), D);
          }
        }
        const attn_t* ap = any ? a.const_data_ptr<attn_t>() : nullptr;
        const acc_t* prob = nullptr;  // pass B: turn grad_p into grad_logits
        if constexpr (kLogits) prob = ap;
        if (need_x || need_gm || need_ga)
          backward_x_ghost_kernel<scalar_t, attn_t>(
              go, xp, ap, gmp, gap, need_x ? gx.mutable_data_ptr<scalar_t>() : nullptr,
              need_gm ? part_gm.mutable_data_ptr<double>() : nullptr,
              need_ga ? part_ga.mutable_data_ptr<double>() : nullptr, D);
        if (need_attn)
          backward_attn_kernel<scalar_t>(go, xp, gmp, gattn.mutable_data_ptr<scalar_t>(), D, prob);
        if (need_gm)
          reduce_ghost_partials<scalar_t>(part_gm.const_data_ptr<double>(),
                                          ggm.mutable_data_ptr<scalar_t>(), D, D.gm_bstride != 0);
        if (need_ga)
          reduce_ghost_partials<scalar_t>(part_ga.const_data_ptr<double>(),
                                          gga.mutable_data_ptr<scalar_t>(), D, D.ga_bstride != 0);
      });
  return std::make_tuple(gx, gattn, ggm, gga);
}

}  // namespace

at::Tensor elsa_forward_cpu(const at::Tensor& x, const at::Tensor& attn,
                            const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                            const ElsaDims& D, bool logits) {
  return logits ? forward_cpu<true>(x, attn, ghost_mul, ghost_add, D)
                : forward_cpu<false>(x, attn, ghost_mul, ghost_add, D);
}

Grads elsa_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& attn,
                        const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                        const ElsaDims& D, std::array<bool, 4> mask, bool logits) {
  return logits ? backward_cpu<true>(grad_out, x, attn, ghost_mul, ghost_add, D, mask)
                : backward_cpu<false>(grad_out, x, attn, ghost_mul, ghost_add, D, mask);
}

}  // namespace mmelsa
