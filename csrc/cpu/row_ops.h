// Row primitives shared by the CPU kernels, on one row held in an accumulation buffer of type
// acc_t (float for fp32/fp16/bf16 inputs, double for fp64): loads of any input dtype, vectorised
// sums, LayerNorm and GELU (erf form) forward and backward.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace mux::cpu {

// float for fp32/fp16/bf16 inputs, double for fp64 (so fp64 gradcheck sees fp64 math).
template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Returns `src` as acc_t: the pointer itself when the types match, else a converted copy in `buf`.
template <typename T, typename acc_t>
inline const acc_t* as_acc(const T* src, acc_t* buf, int64_t n) {
  if constexpr (std::is_same_v<T, acc_t>) {
    return src;
  } else {
    at::vec::convert(src, buf, n);
    return buf;
  }
}

template <typename T, typename acc_t>
inline void store_from_acc(const acc_t* src, T* dst, int64_t n) {
  at::vec::convert(src, dst, n);
}

template <typename acc_t>
inline acc_t row_sum(const acc_t* x, int64_t n) {
  using Vec = at::vec::Vectorized<acc_t>;
  Vec acc(acc_t(0));
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) acc += Vec::loadu(x + k);
  acc_t s = at::vec::vec_reduce_all<acc_t>([](Vec& a, Vec& b) { return a + b; }, acc);
  for (; k < n; ++k) s += x[k];
  return s;
}

template <typename acc_t>
inline acc_t row_dot(const acc_t* a, const acc_t* b, int64_t n) {
  using Vec = at::vec::Vectorized<acc_t>;
  Vec acc(acc_t(0));
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) acc = at::vec::fmadd(Vec::loadu(a + k), Vec::loadu(b + k), acc);
  acc_t s = at::vec::vec_reduce_all<acc_t>([](Vec& x, Vec& y) { return x + y; }, acc);
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

// acc += a * b
template <typename acc_t>
inline void row_fma(acc_t* acc, const acc_t* a, const acc_t* b, int64_t n) {
  using Vec = at::vec::Vectorized<acc_t>;
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size())
    at::vec::fmadd(Vec::loadu(a + k), Vec::loadu(b + k), Vec::loadu(acc + k)).store(acc + k);
  for (; k < n; ++k) acc[k] += a[k] * b[k];
}

// acc += a
template <typename acc_t>
inline void row_add(acc_t* acc, const acc_t* a, int64_t n) {
  using Vec = at::vec::Vectorized<acc_t>;
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) (Vec::loadu(acc + k) + Vec::loadu(a + k)).store(acc + k);
  for (; k < n; ++k) acc[k] += a[k];
}

// Normalises x in place to xhat = (x - mean) * rstd (two-pass, fp32) and returns rstd.
template <typename acc_t>
inline acc_t layer_norm_row(acc_t* x, int64_t n, acc_t eps) {
  const acc_t mean = row_sum(x, n) / static_cast<acc_t>(n);
  for (int64_t k = 0; k < n; ++k) x[k] -= mean;
  const acc_t var = row_dot(x, x, n) / static_cast<acc_t>(n);
  const acc_t rstd = acc_t(1) / std::sqrt(var + eps);
  for (int64_t k = 0; k < n; ++k) x[k] *= rstd;
  return rstd;
}

// y = xhat * w + b, with w or b absent (nullptr) meaning 1 or 0.
template <typename acc_t>
inline void affine_row(const acc_t* xhat, const acc_t* w, const acc_t* b, acc_t* y, int64_t n) {
  for (int64_t k = 0; k < n; ++k) y[k] = xhat[k] * (w ? w[k] : acc_t(1)) + (b ? b[k] : acc_t(0));
}

// Given dxhat (gradient w.r.t. the normalised row) and xhat, writes the gradient w.r.t. the LayerNorm
// input into dx (which may alias dxhat).
template <typename acc_t>
inline void layer_norm_backward_row(const acc_t* dxhat, const acc_t* xhat, acc_t rstd, acc_t* dx, int64_t n) {
  const acc_t inv_n = acc_t(1) / static_cast<acc_t>(n);
  const acc_t mean_dxhat = row_sum(dxhat, n) * inv_n;
  const acc_t mean_dxhat_xhat = row_dot(dxhat, xhat, n) * inv_n;
  for (int64_t k = 0; k < n; ++k) dx[k] = rstd * (dxhat[k] - mean_dxhat - xhat[k] * mean_dxhat_xhat);
}

// GELU with the exact erf, as torch.nn.functional.gelu: y = z * Phi(z).
template <typename acc_t>
inline void gelu_row(const acc_t* z, acc_t* y, int64_t n) {
  using Vec = at::vec::Vectorized<acc_t>;
  const Vec half(acc_t(0.5)), one(acc_t(1)), inv_sqrt2(static_cast<acc_t>(M_SQRT1_2));
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) {
    Vec v = Vec::loadu(z + k);
    (half * v * (one + (v * inv_sqrt2).erf())).store(y + k);
  }
  for (; k < n; ++k) y[k] = acc_t(0.5) * z[k] * (acc_t(1) + std::erf(z[k] * static_cast<acc_t>(M_SQRT1_2)));
}

// dz = dy * GELU'(z), GELU'(z) = Phi(z) + z * phi(z). dz may alias dy.
template <typename acc_t>
inline void gelu_backward_row(const acc_t* dy, const acc_t* z, acc_t* dz, int64_t n) {
  using Vec = at::vec::Vectorized<acc_t>;
  const acc_t inv_sqrt2 = static_cast<acc_t>(M_SQRT1_2);
  const acc_t inv_sqrt_2pi = static_cast<acc_t>(0.3989422804014327);
  const Vec half(acc_t(0.5)), one(acc_t(1)), minus_half(acc_t(-0.5)), vinv_sqrt2(inv_sqrt2), vinv_sqrt_2pi(inv_sqrt_2pi);
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) {
    const Vec v = Vec::loadu(z + k);
    const Vec cdf = half * (one + (v * vinv_sqrt2).erf());
    const Vec pdf = vinv_sqrt_2pi * (minus_half * v * v).exp();
    (Vec::loadu(dy + k) * (cdf + v * pdf)).store(dz + k);
  }
  for (; k < n; ++k) {
    const acc_t cdf = acc_t(0.5) * (acc_t(1) + std::erf(z[k] * inv_sqrt2));
    const acc_t pdf = inv_sqrt_2pi * std::exp(acc_t(-0.5) * z[k] * z[k]);
    dz[k] = dy[k] * (cdf + z[k] * pdf);
  }
}

// Rows handed to one parallel task: enough work (~32k elements) to amortise the task overhead.
inline int64_t grain_rows(int64_t work_per_row) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_row));
}

// Reductions over rows run as a fixed number of contiguous chunks, each summing into its own
// partial buffer; partials are then added in chunk order, so results are bitwise reproducible.
inline int64_t num_chunks(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(rows, at::get_num_threads()));
}

template <typename F>
inline void parallel_chunks(int64_t rows, int64_t chunks, const F& fn) {
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(c, rows * c / chunks, rows * (c + 1) / chunks);
  });
}

}  // namespace mux::cpu
