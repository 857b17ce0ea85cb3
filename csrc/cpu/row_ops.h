// Row primitives shared by the CPU kernels: fp32 loads of any input dtype, vectorised sums,
// LayerNorm and GELU (erf form) forward and backward on one row held in a float buffer.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace mux::cpu {

using Vec = at::vec::Vectorized<float>;

// Returns `src` as fp32: the pointer itself for float, else a converted copy in `buf`.
template <typename T>
inline const float* as_float(const T* src, float* buf, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return src;
  } else {
    at::vec::convert(src, buf, n);
    return buf;
  }
}

template <typename T>
inline void store_from_float(const float* src, T* dst, int64_t n) {
  at::vec::convert(src, dst, n);
}

inline float row_sum(const float* x, int64_t n) {
  Vec acc(0.f);
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) acc += Vec::loadu(x + k);
  float s = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, acc);
  for (; k < n; ++k) s += x[k];
  return s;
}

inline float row_dot(const float* a, const float* b, int64_t n) {
  Vec acc(0.f);
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) acc = at::vec::fmadd(Vec::loadu(a + k), Vec::loadu(b + k), acc);
  float s = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, acc);
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

// acc += a * b
inline void row_fma(float* acc, const float* a, const float* b, int64_t n) {
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size())
    at::vec::fmadd(Vec::loadu(a + k), Vec::loadu(b + k), Vec::loadu(acc + k)).store(acc + k);
  for (; k < n; ++k) acc[k] += a[k] * b[k];
}

// acc += a
inline void row_add(float* acc, const float* a, int64_t n) {
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) (Vec::loadu(acc + k) + Vec::loadu(a + k)).store(acc + k);
  for (; k < n; ++k) acc[k] += a[k];
}

// Normalises x in place to xhat = (x - mean) * rstd (two-pass, fp32) and returns rstd.
inline float layer_norm_row(float* x, int64_t n, float eps) {
  const float mean = row_sum(x, n) / static_cast<float>(n);
  for (int64_t k = 0; k < n; ++k) x[k] -= mean;
  const float var = row_dot(x, x, n) / static_cast<float>(n);
  const float rstd = 1.f / std::sqrt(var + eps);
  for (int64_t k = 0; k < n; ++k) x[k] *= rstd;
  return rstd;
}

// y = xhat * w + b, with w or b absent (nullptr) meaning 1 or 0.
inline void affine_row(const float* xhat, const float* w, const float* b, float* y, int64_t n) {
  for (int64_t k = 0; k < n; ++k) y[k] = xhat[k] * (w ? w[k] : 1.f) + (b ? b[k] : 0.f);
}

// Given dxhat (gradient w.r.t. the normalised row) and xhat, writes the gradient w.r.t. the LayerNorm
// input into dx (which may alias dxhat).
inline void layer_norm_backward_row(const float* dxhat, const float* xhat, float rstd, float* dx, int64_t n) {
  const float inv_n = 1.f / static_cast<float>(n);
  const float mean_dxhat = row_sum(dxhat, n) * inv_n;
  const float mean_dxhat_xhat = row_dot(dxhat, xhat, n) * inv_n;
  for (int64_t k = 0; k < n; ++k) dx[k] = rstd * (dxhat[k] - mean_dxhat - xhat[k] * mean_dxhat_xhat);
}

// GELU with the exact erf, as torch.nn.functional.gelu: y = z * Phi(z).
inline void gelu_row(const float* z, float* y, int64_t n) {
  const Vec half(0.5f), one(1.f), inv_sqrt2(static_cast<float>(M_SQRT1_2));
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) {
    Vec v = Vec::loadu(z + k);
    (half * v * (one + (v * inv_sqrt2).erf())).store(y + k);
  }
  for (; k < n; ++k) y[k] = 0.5f * z[k] * (1.f + std::erf(z[k] * static_cast<float>(M_SQRT1_2)));
}

// dz = dy * GELU'(z), GELU'(z) = Phi(z) + z * phi(z).
inline void gelu_backward_row(const float* dy, const float* z, float* dz, int64_t n) {
  const float inv_sqrt2 = static_cast<float>(M_SQRT1_2);
  const float inv_sqrt_2pi = 0.3989422804014327f;
  for (int64_t k = 0; k < n; ++k) {
    const float cdf = 0.5f * (1.f + std::erf(z[k] * inv_sqrt2));
    const float pdf = inv_sqrt_2pi * std::exp(-0.5f * z[k] * z[k]);
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
