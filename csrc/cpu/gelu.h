// GELU in the erf form (torch.nn.functional.gelu's default), forward and backward, on at::vec vectors.
//
// For fp32 accumulation erf is Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, the formula at::vec's own
// erf uses), with the reciprocal taken from the hardware estimate plus one Newton step instead of a
// division, and at::vec's inline exp_u20 instead of Sleef's out-of-line exp (fewer and cheaper
// instructions on the demultiplex epilogue's critical path). The backward shares the exp between
// Phi and phi. fp64 keeps at::vec's erf and exp, so fp64 gradcheck sees fp64 math.
#pragma once

#include <cmath>
#include <type_traits>

#include "row_ops.h"

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

namespace mux::cpu {

// 1 / x for 1 <= x <= 7 (the only use here), to within a few ulp.
inline Vec<float> reciprocal(const Vec<float>& x) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512 r = _mm512_rcp14_ps(x);  // 14 bits; the Newton step r (2 - x r) doubles them
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(x, r, _mm512_set1_ps(2.f)));
#elif defined(CPU_CAPABILITY_AVX2)
  const __m256 r = _mm256_rcp_ps(x);  // 12 bits
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(x, r, _mm256_set1_ps(2.f)));
#else
  return Vec<float>(1.f) / x;
#endif
}

// Phi(z) = P(Z <= z) for a standard normal Z, and exp(-z^2 / 2): GELU is z Phi(z), its derivative
// Phi(z) + z exp(-z^2 / 2) / sqrt(2 pi).
template <typename acc_t>
struct NormalCdf {
  Vec<acc_t> cdf, gauss;
};

template <typename acc_t>
inline NormalCdf<acc_t> normal_cdf(const Vec<acc_t>& z) {
  using V = Vec<acc_t>;
  const V minus_half(acc_t(-0.5));
  if constexpr (std::is_same_v<acc_t, float>) {
    // erf(|x|) = 1 - t (p1 + p2 t + ... + p5 t^4) exp(-x^2), t = 1 / (1 + p |x|), x = z / sqrt(2);
    // |x| is capped at 16, where erf is 1 in fp32, so an infinite z gives a finite t (the Newton
    // step would turn rcp(inf) = 0 into 0 * inf = nan).
    const V x = at::vec::minimum((z * V(float(M_SQRT1_2))).abs(), V(16.f));
    const V t = reciprocal(at::vec::fmadd(V(0.3275911f), x, V(1.f)));
    V poly = at::vec::fmadd(V(1.061405429f), t, V(-1.453152027f));
    poly = at::vec::fmadd(poly, t, V(1.421413741f));
    poly = at::vec::fmadd(poly, t, V(-0.284496736f));
    poly = at::vec::fmadd(poly, t, V(0.254829592f));
    const V gauss = (minus_half * z * z).exp_u20();
    const V tail = V(0.5f) * poly * t * gauss;  // P(Z > |z|)
    return {V::blendv(V(1.f) - tail, tail, z < V(0.f)), gauss};
  } else {
    const V half(acc_t(0.5)), one(acc_t(1)), inv_sqrt2(static_cast<acc_t>(M_SQRT1_2));
    return {half * (one + (z * inv_sqrt2).erf()), (minus_half * z * z).exp()};
  }
}

template <typename acc_t>
inline Vec<acc_t> gelu(const Vec<acc_t>& z) {
  return z * normal_cdf(z).cdf;
}

// GELU'(z) from the pieces normal_cdf returns.
template <typename acc_t>
inline Vec<acc_t> gelu_derivative(const Vec<acc_t>& z, const NormalCdf<acc_t>& n) {
  return at::vec::fmadd(z * Vec<acc_t>(static_cast<acc_t>(0.3989422804014327)), n.gauss, n.cdf);
}

// y = GELU(z), and z is overwritten with GELU'(z): one erf and one exp per element serve both (the
// backward of GELU followed by LayerNorm needs the activation for the LayerNorm and the slope after).
template <typename acc_t>
inline void gelu_row_with_derivative(acc_t* z, acc_t* y, int64_t n) {
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    const auto v = Vec<acc_t>::loadu(z + k, count);
    const auto pieces = normal_cdf(v);
    (v * pieces.cdf).store(y + k, count);
    gelu_derivative(v, pieces).store(z + k, count);
  });
}

// dz = dy * GELU'(z). dz may alias dy.
template <typename acc_t>
inline void gelu_backward_row(const acc_t* dy, const acc_t* z, acc_t* dz, int64_t n) {
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    const auto v = Vec<acc_t>::loadu(z + k, count);
    (Vec<acc_t>::loadu(dy + k, count) * gelu_derivative(v, normal_cdf(v))).store(dz + k, count);
  });
}

}  // namespace mux::cpu
