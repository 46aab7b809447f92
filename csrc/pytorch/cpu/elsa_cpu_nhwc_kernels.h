// Channels-last (NHWC) CPU kernels of the ELSA operator, plain and fused (softmax), forward and
// backward. Included by elsa_cpu_nhwc.cpp inside a namespace once per instruction set (the
// baseline, and AVX2 + FMA under `#pragma GCC target`), so: no include guard, no #include
// (everything it needs is included before), every function defined here.
//
// Why this layout: in NHWC the channels of a pixel are contiguous, so the inner loop of every
// pass runs over the channels of one head, a contiguous, fixed-length run that the compiler
// vectorises with the accumulators in registers (blocks of kBlock channels, see gather_block).
// One attention value per (pixel, head, tap) is broadcast over the head's channels.
//
// Layouts (element offsets; the channel stride is 1 everywhere):
//   x            strides (xs.b, xs.y, xs.x): a channel slice of a wider channels-last map is
//                read in place (its pixel stride is that map's width)
//   out, grad_out, grad_x   dense (B, H, W, C)
//   attn / logits / probabilities / grad_attn   dense pixel-major (B, Ho, Wo, G, K*K)
//   gmT, gaT     the ghosts transposed to (K*K, C) in acc_t, per sample (B, K*K, C) for a
//                per-sample ghost (sample b's table at b * D.gm_bstride / D.ga_bstride, 0 for
//                a shared one); gmT == nullptr means "ones" (template flag kMul), gaT is all
//                zeros when there is no additive ghost
//
// Every output element is computed by one task from a fixed set of inputs in a fixed order,
// and the ghost gradients are summed over fixed row chunks (kRowsPerPart), never over
// threads: the results do not depend on the number of threads.

struct XStrides {
  int64_t b, y, x;
};

// Sample b's ghost table (gmT / gaT above); an absent table stays null.
template <typename acc_t>
inline const acc_t* sample_table(const acc_t* table, int64_t b, int64_t bstride) {
  return table ? table + b * bstride : nullptr;
}

// Channel block of the register-blocked loops: 32 floats are four AVX2 registers of
// accumulators (eight for double); a head's channels are done in blocks of kBlock, then 8,
// then a shorter tail.
constexpr int kBlock = 32;
constexpr int kSmall = 8;
// Output rows per ghost-gradient partial (the partials are summed in a fixed order).
constexpr int64_t kRowsPerPart = 4;

// 32-byte vectors of the accumulation type (GCC / clang vector extensions): one AVX2 register
// in the AVX2 copy, two SSE registers in the baseline one. Written out because GCC did not keep
// the plain loop's accumulators in registers (it versioned the loop and ran a scalar copy).
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int lanes = 32 / sizeof(T);
};

template <typename acc_t, typename T>
inline typename Vec<acc_t>::type load_vec(const T* p) {
  typename Vec<acc_t>::type v;
  if constexpr (std::is_same_v<T, acc_t>) {
    __builtin_memcpy(&v, p, sizeof(v));  // an unaligned load
  } else {
    for (int l = 0; l < Vec<acc_t>::lanes; ++l) v[l] = static_cast<acc_t>(p[l]);
  }
  return v;
}

template <typename acc_t, typename T>
inline void store_vec(T* p, const typename Vec<acc_t>::type& v) {
  if constexpr (std::is_same_v<T, acc_t>) {
    __builtin_memcpy(p, &v, sizeof(v));
  } else {
    for (int l = 0; l < Vec<acc_t>::lanes; ++l) p[l] = static_cast<T>(v[l]);
  }
}

// dst[c0 + l] = sum_k src[soff[k] + c0 + l] * (gm[t_k, c0 + l] * att[aoff[k]] + ga[t_k, c0 + l])
// for l < N (kFull; N a multiple of the vector length) or l < n (the tail, scalar).
template <int N, bool kFull, bool kMul, typename scalar_t, typename attn_t, typename acc_t>
inline void gather_block(const scalar_t* src, const int64_t* soff, const attn_t* att,
                         const int64_t* aoff, const int32_t* tap, int64_t n_taps, const acc_t* gmT,
                         const acc_t* gaT, int64_t C, int64_t c0, int64_t n, scalar_t* dst) {
  if constexpr (kFull) {
    using V = typename Vec<acc_t>::type;
    constexpr int L = Vec<acc_t>::lanes, NV = N / L;
    V acc[NV];
    for (int q = 0; q < NV; ++q) acc[q] = V{};
    for (int64_t k = 0; k < n_taps; ++k) {
      const scalar_t* s = src + soff[k] + c0;
      const acc_t a = static_cast<acc_t>(att[aoff[k]]);
      const acc_t* ga = gaT + tap[k] * C + c0;
      const acc_t* gm = kMul ? gmT + tap[k] * C + c0 : nullptr;
      for (int q = 0; q < NV; ++q) {
        const V w = kMul ? load_vec<acc_t>(gm + q * L) * a + load_vec<acc_t>(ga + q * L)
                         : load_vec<acc_t>(ga + q * L) + a;
        acc[q] += load_vec<acc_t>(s + q * L) * w;
      }
    }
    for (int q = 0; q < NV; ++q) store_vec<acc_t>(dst + c0 + q * L, acc[q]);
  } else {
    acc_t acc[N];
    for (int l = 0; l < N; ++l) acc[l] = acc_t(0);
    for (int64_t k = 0; k < n_taps; ++k) {
      const scalar_t* s = src + soff[k] + c0;
      const acc_t a = static_cast<acc_t>(att[aoff[k]]);
      const acc_t* ga = gaT + tap[k] * C + c0;
      const acc_t* gm = kMul ? gmT + tap[k] * C + c0 : nullptr;
      for (int64_t l = 0; l < n; ++l)
        acc[l] += static_cast<acc_t>(s[l]) * (kMul ? gm[l] * a + ga[l] : a + ga[l]);
    }
    for (int64_t l = 0; l < n; ++l) dst[c0 + l] = static_cast<scalar_t>(acc[l]);
  }
}

// One pixel of dst, all heads: att points at the pixel's (or the tap's) G x K*K attention
// row(s), aoff[k] at tap k's entry of head 0; head g's entry is K*K further per head.
template <bool kMul, typename scalar_t, typename attn_t, typename acc_t>
inline void gather_pixel(const scalar_t* src, const int64_t* soff, const attn_t* att,
                         const int64_t* aoff, const int32_t* tap, int64_t n_taps, const acc_t* gmT,
                         const acc_t* gaT, const ElsaDims& D, scalar_t* dst) {
  for (int64_t g = 0; g < D.G; ++g) {
    const attn_t* ag = att + g * D.KK;
    int64_t c = g * D.cpg;
    const int64_t end = c + D.cpg;
    for (; c + kBlock <= end; c += kBlock)
      gather_block<kBlock, true, kMul>(src, soff, ag, aoff, tap, n_taps, gmT, gaT, D.C, c, 0, dst);
    for (; c + kSmall <= end; c += kSmall)
      gather_block<kSmall, true, kMul>(src, soff, ag, aoff, tap, n_taps, gmT, gaT, D.C, c, 0, dst);
    if (c < end)
      gather_block<kSmall, false, kMul>(src, soff, ag, aoff, tap, n_taps, gmT, gaT, D.C, c,
                                        end - c, dst);
  }
}

// The taps of output pixel (b, i, j) that land inside the image: x offsets and tap indices.
inline int64_t output_taps(int64_t b, int64_t i, int64_t j, const XStrides& xs, const ElsaDims& D,
                           int64_t* soff, int32_t* tap) {
  int64_t n = 0;
  for (int64_t u = 0; u < D.K; ++u) {
    const int64_t y = i * D.stride + u * D.dil - D.pad;
    if (y < 0 || y >= D.H) continue;
    for (int64_t v = 0; v < D.K; ++v) {
      const int64_t xx = j * D.stride + v * D.dil - D.pad;
      if (xx < 0 || xx >= D.W) continue;
      soff[n] = b * xs.b + y * xs.y + xx * xs.x;
      tap[n] = static_cast<int32_t>(u * D.K + v);
      ++n;
    }
  }
  return n;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif
#include "elsa_cpu_exp.h"

// Softmax of each head's K*K contiguous logits of one pixel, in acc_t. The maximum and the
// sum are taken in 8 lanes (element-wise, so they vectorise; a single running maximum or sum
// is a serial dependency chain that cost as much as the aggregation), then across the lanes
// in a fixed order. Ternaries, not std::max: a function compiled outside this region is not
// inlined.
template <typename scalar_t, typename acc_t>
inline void softmax_pixel(const scalar_t* l, int64_t G, int64_t KK, acc_t* p) {
  constexpr int SL = 8;
  const int64_t body = KK / SL * SL;
  for (int64_t g = 0; g < G; ++g) {
    const scalar_t* lg = l + g * KK;
    acc_t* pg = p + g * KK;
    for (int64_t t = 0; t < KK; ++t) pg[t] = static_cast<acc_t>(lg[t]);
    acc_t m8[SL];
    for (int q = 0; q < SL; ++q) m8[q] = pg[0];
    for (int64_t t = 0; t < body; t += SL)
      for (int q = 0; q < SL; ++q) m8[q] = m8[q] < pg[t + q] ? pg[t + q] : m8[q];
    for (int64_t t = body; t < KK; ++t) m8[0] = m8[0] < pg[t] ? pg[t] : m8[0];
    acc_t mx = m8[0];
    for (int q = 1; q < SL; ++q) mx = mx < m8[q] ? m8[q] : mx;
    for (int64_t t = 0; t < KK; ++t) pg[t] = exp_shifted(pg[t] - mx);
    acc_t s8[SL] = {};
    for (int64_t t = 0; t < body; t += SL)
      for (int q = 0; q < SL; ++q) s8[q] += pg[t + q];
    for (int64_t t = body; t < KK; ++t) s8[0] += pg[t];
    const acc_t sum = ((s8[0] + s8[1]) + (s8[2] + s8[3])) + ((s8[4] + s8[5]) + (s8[6] + s8[7]));
    const acc_t inv = acc_t(1) / sum;
    for (int64_t t = 0; t < KK; ++t) pg[t] *= inv;
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

// Forward: parallel over output rows (b, i); per pixel the attention row (or its softmax) is
// taken once into acc_t and serves all channels.
template <bool kLogits, bool kMul, typename scalar_t, typename acc_t>
void forward_kernel(const scalar_t* x, XStrides xs, const scalar_t* attn, const acc_t* gmT,
                    const acc_t* gaT, scalar_t* out, const ElsaDims& D) {
  const int64_t GKK = D.G * D.KK;
  at::parallel_for(0, D.B * D.Ho, grain_for(D.Wo * D.KK * D.C), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> soff(D.KK), aoff(D.KK);
    std::vector<int32_t> tap(D.KK);
    std::vector<acc_t> prob(GKK);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / D.Ho, i = task % D.Ho;
      const acc_t* gm = sample_table(gmT, b, D.gm_bstride);
      const acc_t* ga = sample_table(gaT, b, D.ga_bstride);
      for (int64_t j = 0; j < D.Wo; ++j) {
        const int64_t pix = task * D.Wo + j;
        const scalar_t* arow = attn + pix * GKK;
        if (kLogits)
          softmax_pixel(arow, D.G, D.KK, prob.data());
        else
          for (int64_t k = 0; k < GKK; ++k) prob[k] = static_cast<acc_t>(arow[k]);
        const int64_t n = output_taps(b, i, j, xs, D, soff.data(), tap.data());
        for (int64_t k = 0; k < n; ++k) aoff[k] = tap[k];
        gather_pixel<kMul>(x, soff.data(), prob.data(), aoff.data(), tap.data(), n, gm, ga, D,
                           out + pix * D.C);
      }
    }
  });
}

// grad_x as a gather (no scatter, so no two tasks write one element): parallel over input rows
// (b, y); input pixel (y, x) receives grad_out of every output pixel whose tap lands on it,
// weighted by that output pixel's attention (attn_t: scalar_t, or acc_t probabilities).
template <bool kMul, typename scalar_t, typename attn_t, typename acc_t>
void grad_x_kernel(const scalar_t* gout, const attn_t* attn, const acc_t* gmT, const acc_t* gaT,
                   scalar_t* gx, const ElsaDims& D) {
  const int64_t GKK = D.G * D.KK;
  at::parallel_for(0, D.B * D.H, grain_for(D.W * D.KK * D.C), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> soff(D.KK), aoff(D.KK);
    std::vector<int32_t> tap(D.KK);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / D.H, y = task % D.H;
      const acc_t* gm = sample_table(gmT, b, D.gm_bstride);
      const acc_t* ga = sample_table(gaT, b, D.ga_bstride);
      for (int64_t xx = 0; xx < D.W; ++xx) {
        int64_t n = 0;
        for (int64_t u = 0; u < D.K; ++u) {
          const int64_t ny = y + D.pad - u * D.dil;  // = i * stride for the output row i
          if (ny < 0 || ny % D.stride != 0 || ny / D.stride >= D.Ho) continue;
          for (int64_t v = 0; v < D.K; ++v) {
            const int64_t nx = xx + D.pad - v * D.dil;
            if (nx < 0 || nx % D.stride != 0 || nx / D.stride >= D.Wo) continue;
            const int64_t pix = (b * D.Ho + ny / D.stride) * D.Wo + nx / D.stride;
            soff[n] = pix * D.C;
            aoff[n] = pix * GKK + u * D.K + v;
            tap[n] = static_cast<int32_t>(u * D.K + v);
            ++n;
          }
        }
        gather_pixel<kMul>(gout, soff.data(), attn, aoff.data(), tap.data(), n, gm, ga, D,
                           gx + (task * D.W + xx) * D.C);
      }
    }
  });
}

// One channel block of one output pixel for grad_attn and the ghost gradients: with
// p = grad_out * x[tap] (per channel), row_ga[t] += p, row_gm[t] += p * attn_t, and
// gp[t] += sum_c p * ghost_mul[t, c] (the gradient of the attention, this block's share).
// The channel sum is taken lane-wise over the block's vectors, then across the lanes, in a
// fixed order.
template <int N, bool kFull, bool kMul, typename scalar_t, typename attn_t, typename acc_t>
inline void attn_ghost_block(const scalar_t* go, const scalar_t* x, const int64_t* soff,
                             const int32_t* tap, int64_t n_taps, const attn_t* ag,
                             const acc_t* gmT, acc_t* row_ga, acc_t* row_gm, acc_t* gp, int64_t C,
                             int64_t c0, int64_t n) {
  if constexpr (kFull) {
    using V = typename Vec<acc_t>::type;
    constexpr int L = Vec<acc_t>::lanes, NV = N / L;
    V g[NV];
    for (int q = 0; q < NV; ++q) g[q] = load_vec<acc_t>(go + c0 + q * L);
    for (int64_t k = 0; k < n_taps; ++k) {
      const scalar_t* s = x + soff[k] + c0;
      const int64_t t = tap[k];
      V p[NV];
      for (int q = 0; q < NV; ++q) p[q] = g[q] * load_vec<acc_t>(s + q * L);
      if (row_ga) {
        acc_t* r = row_ga + t * C + c0;
        for (int q = 0; q < NV; ++q)
          store_vec<acc_t>(r + q * L, load_vec<acc_t>(r + q * L) + p[q]);
      }
      if (row_gm) {
        const acc_t a = static_cast<acc_t>(ag[t]);
        acc_t* r = row_gm + t * C + c0;
        for (int q = 0; q < NV; ++q)
          store_vec<acc_t>(r + q * L, load_vec<acc_t>(r + q * L) + p[q] * a);
      }
      if (gp) {
        V sum = kMul ? p[0] * load_vec<acc_t>(gmT + t * C + c0) : p[0];
        for (int q = 1; q < NV; ++q)
          sum += kMul ? p[q] * load_vec<acc_t>(gmT + t * C + c0 + q * L) : p[q];
        acc_t total = sum[0];
        for (int l = 1; l < L; ++l) total += sum[l];
        gp[t] += total;
      }
    }
  } else {
    acc_t g[N], p[N];
    for (int64_t l = 0; l < n; ++l) g[l] = static_cast<acc_t>(go[c0 + l]);
    for (int64_t k = 0; k < n_taps; ++k) {
      const scalar_t* s = x + soff[k] + c0;
      const int64_t t = tap[k];
      for (int64_t l = 0; l < n; ++l) p[l] = g[l] * static_cast<acc_t>(s[l]);
      if (row_ga)
        for (int64_t l = 0; l < n; ++l) row_ga[t * C + c0 + l] += p[l];
      if (row_gm) {
        const acc_t a = static_cast<acc_t>(ag[t]);
        for (int64_t l = 0; l < n; ++l) row_gm[t * C + c0 + l] += p[l] * a;
      }
      if (gp) {
        acc_t sum = acc_t(0);
        for (int64_t l = 0; l < n; ++l) sum += kMul ? p[l] * gmT[t * C + c0 + l] : p[l];
        gp[t] += sum;
      }
    }
  }
}

// grad_attn (or, kLogits, grad_logits from the probabilities `attn`) and the ghost partials.
// Parallel over chunks of kRowsPerPart output rows of one image; a chunk accumulates its ghost
// sums per row in acc_t (one row of pixels) and per chunk in double, into
// part_*[(b, chunk), t, c] (a chunk never spans two samples, so a per-sample ghost's gradient
// sums its own sample's chunks). gattn / part_gm / part_ga may be null (not asked for).
template <bool kLogits, bool kMul, typename scalar_t, typename attn_t, typename acc_t>
void grad_attn_ghost_kernel(const scalar_t* gout, const scalar_t* x, XStrides xs,
                            const attn_t* attn, const acc_t* gmT, scalar_t* gattn, double* part_gm,
                            double* part_ga, const ElsaDims& D) {
  const int64_t GKK = D.G * D.KK, KC = D.KK * D.C;
  const int64_t parts = (D.Ho + kRowsPerPart - 1) / kRowsPerPart;
  at::parallel_for(0, D.B * parts, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> soff(D.KK);
    std::vector<int32_t> tap(D.KK);
    std::vector<acc_t> row_ga(part_ga ? KC : 0), row_gm(part_gm ? KC : 0), gp(GKK);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / parts, i0 = task % parts * kRowsPerPart;
      const int64_t i1 = std::min(D.Ho, i0 + kRowsPerPart);
      const acc_t* gm = sample_table(gmT, b, D.gm_bstride);
      double* pga = part_ga ? part_ga + task * KC : nullptr;
      double* pgm = part_gm ? part_gm + task * KC : nullptr;
      if (pga) std::fill(pga, pga + KC, 0.0);
      if (pgm) std::fill(pgm, pgm + KC, 0.0);
      for (int64_t i = i0; i < i1; ++i) {
        std::fill(row_ga.begin(), row_ga.end(), acc_t(0));
        std::fill(row_gm.begin(), row_gm.end(), acc_t(0));
        for (int64_t j = 0; j < D.Wo; ++j) {
          const int64_t pix = (b * D.Ho + i) * D.Wo + j;
          const scalar_t* go = gout + pix * D.C;
          const attn_t* arow = attn + pix * GKK;
          const int64_t n = output_taps(b, i, j, xs, D, soff.data(), tap.data());
          std::fill(gp.begin(), gp.end(), acc_t(0));
          acc_t* rga = pga ? row_ga.data() : nullptr;
          acc_t* rgm = pgm ? row_gm.data() : nullptr;
          for (int64_t g = 0; g < D.G; ++g) {
            acc_t* gpg = gattn ? gp.data() + g * D.KK : nullptr;
            const attn_t* ag = arow + g * D.KK;
            int64_t c = g * D.cpg;
            const int64_t cend = c + D.cpg;
            for (; c + kBlock <= cend; c += kBlock)
              attn_ghost_block<kBlock, true, kMul>(go, x, soff.data(), tap.data(), n, ag, gm, rga,
                                                   rgm, gpg, D.C, c, 0);
            for (; c + kSmall <= cend; c += kSmall)
              attn_ghost_block<kSmall, true, kMul>(go, x, soff.data(), tap.data(), n, ag, gm, rga,
                                                   rgm, gpg, D.C, c, 0);
            if (c < cend)
              attn_ghost_block<kSmall, false, kMul>(go, x, soff.data(), tap.data(), n, ag, gm, rga,
                                                    rgm, gpg, D.C, c, cend - c);
          }
          if (!gattn) continue;
          scalar_t* dst = gattn + pix * GKK;
          for (int64_t g = 0; g < D.G; ++g) {
            const acc_t* gpg = gp.data() + g * D.KK;
            if (kLogits) {  // grad_logit_t = p_t * (grad_p_t - sum_u p_u * grad_p_u)
              const attn_t* pg = arow + g * D.KK;
              acc_t dot = 0;
              for (int64_t t = 0; t < D.KK; ++t) dot += static_cast<acc_t>(pg[t]) * gpg[t];
              for (int64_t t = 0; t < D.KK; ++t)
                dst[g * D.KK + t] =
                    static_cast<scalar_t>(static_cast<acc_t>(pg[t]) * (gpg[t] - dot));
            } else {
              for (int64_t t = 0; t < D.KK; ++t) dst[g * D.KK + t] = static_cast<scalar_t>(gpg[t]);
            }
          }
        }
        for (int64_t k = 0; pga && k < KC; ++k) pga[k] += row_ga[k];
        for (int64_t k = 0; pgm && k < KC; ++k) pgm[k] += row_gm[k];
      }
    }
  });
}

// The probabilities of every pixel, pixel-major (B, Ho, Wo, G, K*K) in acc_t.
template <typename scalar_t, typename acc_t>
void probs_kernel(const scalar_t* logits, acc_t* prob, const ElsaDims& D) {
  const int64_t GKK = D.G * D.KK, P = D.B * D.Ho * D.Wo;
  at::parallel_for(0, P, grain_for(3 * GKK), [&](int64_t begin, int64_t end) {
    for (int64_t pix = begin; pix < end; ++pix)
      softmax_pixel(logits + pix * GKK, D.G, D.KK, prob + pix * GKK);
  });
}

// ---- entry points of this instruction set (type dispatch inside, so that every template is
// instantiated in the region compiled for it) ----

// out: dense (B, Ho, Wo, C); attn: dense (B, Ho, Wo, G, K*K) (logits when `logits`).
inline void forward(const at::Tensor& x, const at::Tensor& attn, const at::Tensor& gmT,
                    const at::Tensor& gaT, at::Tensor& out, const ElsaDims& D, bool logits) {
  const XStrides xs{x.stride(0), x.stride(2), x.stride(3)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "elsa_nhwc_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* ap = attn.const_data_ptr<scalar_t>();
    const acc_t* gm = gmT.defined() ? gmT.const_data_ptr<acc_t>() : nullptr;
    const acc_t* ga = gaT.const_data_ptr<acc_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    if (logits && gm) forward_kernel<true, true>(xp, xs, ap, gm, ga, op, D);
    if (logits && !gm) forward_kernel<true, false>(xp, xs, ap, gm, ga, op, D);
    if (!logits && gm) forward_kernel<false, true>(xp, xs, ap, gm, ga, op, D);
    if (!logits && !gm) forward_kernel<false, false>(xp, xs, ap, gm, ga, op, D);
  });
}

// Backward: grad_out dense (B, Ho, Wo, C); attn dense pixel-major (logits when `logits`);
// gx dense (B, H, W, C), gattn dense pixel-major, part_* (B * row chunks, K*K, C) double; an
// undefined tensor is a gradient not asked for.
inline void backward(const at::Tensor& gout, const at::Tensor& x, const at::Tensor& attn,
                     const at::Tensor& gmT, const at::Tensor& gaT, at::Tensor& gx,
                     at::Tensor& gattn, at::Tensor& part_gm, at::Tensor& part_ga,
                     const ElsaDims& D, bool logits) {
  const XStrides xs{x.stride(0), x.stride(2), x.stride(3)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "elsa_nhwc_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* go = gout.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const acc_t* gm = gmT.defined() ? gmT.const_data_ptr<acc_t>() : nullptr;
    const acc_t* ga = gaT.const_data_ptr<acc_t>();
    scalar_t* gxp = gx.defined() ? gx.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gap = gattn.defined() ? gattn.mutable_data_ptr<scalar_t>() : nullptr;
    double* pgm = part_gm.defined() ? part_gm.mutable_data_ptr<double>() : nullptr;
    double* pga = part_ga.defined() ? part_ga.mutable_data_ptr<double>() : nullptr;
    const bool ghost_or_attn = gap || pgm || pga;
    // a: the attention, or for the fused op (kLogits) its probabilities
    auto run = [&](auto a, auto logits_tag) {
      constexpr bool kLogits = decltype(logits_tag)::value;
      if (gxp && gm) grad_x_kernel<true>(go, a, gm, ga, gxp, D);
      if (gxp && !gm) grad_x_kernel<false>(go, a, gm, ga, gxp, D);
      if (ghost_or_attn && gm)
        grad_attn_ghost_kernel<kLogits, true>(go, xp, xs, a, gm, gap, pgm, pga, D);
      if (ghost_or_attn && !gm)
        grad_attn_ghost_kernel<kLogits, false>(go, xp, xs, a, gm, gap, pgm, pga, D);
    };
    if (logits) {
      // The probabilities once, in acc_t (both passes read them at every tap).
      at::Tensor prob =
          at::empty(attn.sizes(), attn.options().dtype(c10::CppTypeToScalarType<acc_t>()));
      acc_t* pp = prob.mutable_data_ptr<acc_t>();
      probs_kernel(attn.const_data_ptr<scalar_t>(), pp, D);
      run(static_cast<const acc_t*>(pp), std::true_type());
    } else {
      run(attn.const_data_ptr<scalar_t>(), std::false_type());
    }
  });
}
