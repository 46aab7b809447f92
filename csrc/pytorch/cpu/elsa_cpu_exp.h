// exp_shifted: the vectorisable exp of the fused softmax, shared by the NCHW kernels
// (elsa_cpu.cpp) and the channels-last kernels (elsa_cpu_nhwc_kernels.h).
//
// No include guard and no #include on purpose: it is included inside a namespace, by
// elsa_cpu_nhwc_kernels.h once per instruction set, and always inside a region compiled
// with "no-trapping-math", without which GCC does not vectorise the clamp.
//
// exp(v) of a logit minus its row's maximum (v <= 0, or NaN). std::exp is a library call the
// compiler cannot vectorise, and at 49 per (head, pixel) it cost a fifth of the fused forward,
// so the float version is written to vectorise: v = k ln2 + r with |r| <= ln2 / 2 (ln2 split in
// two so that k ln2 is exact), exp(r) by its Taylor polynomial up to r^7 (truncation error
// below 6e-9 relative, under the float rounding), 2^k put into the exponent bits. v is clamped
// at -87 (exp(-87) = 1.6e-38, the smallest normal range) so that 2^k stays a normal float: a
// probability below that (the maximum's is 1) comes out as 1.6e-38 instead of 0. double keeps
// std::exp (the float64 path is the exact one).

inline double exp_shifted(double v) { return std::exp(v); }

inline float exp_shifted(float v) {
  v = v < -87.0f ? -87.0f : v;  // NaN stays NaN
  // round to nearest for y <= 0: truncation of y - 1/2 (cvttps2dq, plain SSE2)
  const int32_t k = static_cast<int32_t>(v * 1.44269504088896341f - 0.5f);
  const float kf = static_cast<float>(k);
  const float r = (v - kf * 0.693145751953125f) - kf * 1.42860682030941723e-06f;
  float e = 1.0f / 5040.0f;
  e = e * r + 1.0f / 720.0f;
  e = e * r + 1.0f / 120.0f;
  e = e * r + 1.0f / 24.0f;
  e = e * r + 1.0f / 6.0f;
  e = e * r + 0.5f;
  e = e * r + 1.0f;
  e = e * r + 1.0f;
  return e * __builtin_bit_cast(float, (k + 127) << 23);  // std::bit_cast would not inline here
}
