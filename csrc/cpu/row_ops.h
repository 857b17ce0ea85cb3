// Row primitives shared by the CPU kernels: vector loads and stores of any input dtype into the
// accumulation type acc_t (float for fp32/fp16/bf16, double for fp64), a loop over a row in vector
// steps with a masked tail, and vectorised sums and LayerNorm, forward and backward (GELU is in gelu.h).
// Everything is written against at::vec, so it compiles for the ATen CPU capability of the build.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>

namespace mux::cpu {

// float for fp32/fp16/bf16 inputs, double for fp64 (so fp64 gradcheck sees fp64 math).
template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

template <typename acc_t>
using Vec = at::vec::Vectorized<acc_t>;

// Calls body(k, count) for k = 0, V, 2V, ... < n, with count = min(V, n - k): full vectors, then
// one partial vector for the tail. The loads and stores below read and write only `count` lanes.
template <typename acc_t, typename Body>
inline void for_each_vec(int64_t n, const Body& body) {
  constexpr int64_t V = Vec<acc_t>::size();
  int64_t k = 0;
  for (; k + V <= n; k += V) body(k, V);
  if (k < n) body(k, n - k);
}

// `count` elements of T at p as acc_t; the lanes from `count` on are 0.
template <typename acc_t, typename T>
inline Vec<acc_t> load_acc(const T* p, int64_t count) {
  if constexpr (std::is_same_v<T, acc_t>) {
    return Vec<acc_t>::loadu(p, count);
  } else {
    if (count == Vec<acc_t>::size()) {
      Vec<acc_t> v;
      at::vec::load_to_float(p, v);
      return v;
    }
    acc_t tmp[Vec<acc_t>::size()] = {};
    for (int64_t k = 0; k < count; ++k) tmp[k] = static_cast<acc_t>(p[k]);
    return Vec<acc_t>::loadu(tmp);
  }
}

// Stores the first `count` lanes of v at p as T.
template <typename acc_t, typename T>
inline void store_acc(const Vec<acc_t>& v, T* p, int64_t count) {
  if constexpr (std::is_same_v<T, acc_t>) {
    v.store(p, count);
  } else {
    if (count == Vec<acc_t>::size()) {
      at::vec::convert_from_float<T>(v, v).store(p, count);
      return;
    }
    acc_t tmp[Vec<acc_t>::size()];
    v.store(tmp);
    for (int64_t k = 0; k < count; ++k) p[k] = static_cast<T>(tmp[k]);
  }
}

// v with the lanes from `count` on set to 0, so a partial vector can enter a reduction.
template <typename acc_t>
inline Vec<acc_t> head(const Vec<acc_t>& v, int64_t count) {
  return count == Vec<acc_t>::size() ? v : Vec<acc_t>::set(Vec<acc_t>(acc_t(0)), v, count);
}

template <typename acc_t>
inline acc_t reduce_add(const Vec<acc_t>& v) {
  return at::vec::vec_reduce_all<acc_t>([](Vec<acc_t>& a, Vec<acc_t>& b) { return a + b; }, v);
}

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

template <typename acc_t>
inline acc_t row_sum(const acc_t* x, int64_t n) {
  Vec<acc_t> acc(acc_t(0));
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) { acc += Vec<acc_t>::loadu(x + k, count); });
  return reduce_add(acc);
}

template <typename acc_t>
inline acc_t row_dot(const acc_t* a, const acc_t* b, int64_t n) {
  Vec<acc_t> acc(acc_t(0));
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    acc = at::vec::fmadd(Vec<acc_t>::loadu(a + k, count), Vec<acc_t>::loadu(b + k, count), acc);
  });
  return reduce_add(acc);
}

// acc += a * b
template <typename acc_t>
inline void row_fma(acc_t* acc, const acc_t* a, const acc_t* b, int64_t n) {
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    at::vec::fmadd(Vec<acc_t>::loadu(a + k, count), Vec<acc_t>::loadu(b + k, count), Vec<acc_t>::loadu(acc + k, count))
        .store(acc + k, count);
  });
}

// acc += a
template <typename acc_t>
inline void row_add(acc_t* acc, const acc_t* a, int64_t n) {
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    (Vec<acc_t>::loadu(acc + k, count) + Vec<acc_t>::loadu(a + k, count)).store(acc + k, count);
  });
}

// y = a + b (y may alias a or b)
template <typename acc_t>
inline void add_rows(const acc_t* a, const acc_t* b, acc_t* y, int64_t n) {
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    (Vec<acc_t>::loadu(a + k, count) + Vec<acc_t>::loadu(b + k, count)).store(y + k, count);
  });
}

// y = a * b * scale (y may alias a or b)
template <typename acc_t>
inline void mul_rows(const acc_t* a, const acc_t* b, acc_t* y, int64_t n, acc_t scale = acc_t(1)) {
  const Vec<acc_t> s(scale);
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    (Vec<acc_t>::loadu(a + k, count) * Vec<acc_t>::loadu(b + k, count) * s).store(y + k, count);
  });
}

// 1 / sqrt(var + eps) of a row whose mean is known; two-pass variance (the row is in cache), as
// accurate as torch's LayerNorm for rows with a large mean.
template <typename acc_t>
inline acc_t row_rstd(const acc_t* x, int64_t n, acc_t mean, acc_t eps) {
  const Vec<acc_t> m(mean);
  Vec<acc_t> acc(acc_t(0));
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    const auto dev = head(Vec<acc_t>::loadu(x + k, count) - m, count);
    acc = at::vec::fmadd(dev, dev, acc);
  });
  return acc_t(1) / std::sqrt(reduce_add(acc) / static_cast<acc_t>(n) + eps);
}

// Writes value(k, count) (see for_each_vec) over the row into y, summing it on the way, and returns
// the row's LayerNorm statistics (mean, rstd); the variance pass then reads y back from cache.
template <typename acc_t, typename Value>
inline std::pair<acc_t, acc_t> store_row_moments(acc_t* y, int64_t n, acc_t eps, const Value& value) {
  Vec<acc_t> sum(acc_t(0));
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    const auto v = value(k, count);
    v.store(y + k, count);
    sum += head(v, count);
  });
  const acc_t mean = reduce_add(sum) / static_cast<acc_t>(n);
  return {mean, row_rstd(y, n, mean, eps)};
}

// out = (x - mean) * rstd * w + b, written as T (out may alias x when T is acc_t).
template <typename acc_t, typename T>
inline void layer_norm_store(const acc_t* x, int64_t n, acc_t mean, acc_t rstd, const acc_t* w, const acc_t* b,
                             T* out) {
  const Vec<acc_t> m(mean), s(rstd);
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    const auto xhat = (Vec<acc_t>::loadu(x + k, count) - m) * s;
    store_acc(at::vec::fmadd(xhat, Vec<acc_t>::loadu(w + k, count), Vec<acc_t>::loadu(b + k, count)), out + k, count);
  });
}

// Normalises x in place to xhat = (x - mean) * rstd.
template <typename acc_t>
inline void normalize_row(acc_t* x, int64_t n, acc_t mean, acc_t rstd) {
  const Vec<acc_t> m(mean), s(rstd);
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    ((Vec<acc_t>::loadu(x + k, count) - m) * s).store(x + k, count);
  });
}

// Normalises x in place to xhat and returns rstd.
template <typename acc_t>
inline acc_t layer_norm_row(acc_t* x, int64_t n, acc_t eps) {
  const acc_t mean = row_sum(x, n) / static_cast<acc_t>(n);
  const acc_t rstd = row_rstd(x, n, mean, eps);
  normalize_row(x, n, mean, rstd);
  return rstd;
}

// y = xhat * w + b
template <typename acc_t>
inline void affine_row(const acc_t* xhat, const acc_t* w, const acc_t* b, acc_t* y, int64_t n) {
  layer_norm_store(xhat, n, acc_t(0), acc_t(1), w, b, y);
}

// Given dxhat (gradient w.r.t. the normalised row) and xhat, writes the gradient w.r.t. the LayerNorm
// input into dx (which may alias dxhat).
template <typename acc_t>
inline void layer_norm_backward_row(const acc_t* dxhat, const acc_t* xhat, acc_t rstd, acc_t* dx, int64_t n) {
  const acc_t inv_n = acc_t(1) / static_cast<acc_t>(n);
  const Vec<acc_t> mean_dxhat(row_sum(dxhat, n) * inv_n), mean_dxhat_xhat(row_dot(dxhat, xhat, n) * inv_n), s(rstd);
  for_each_vec<acc_t>(n, [&](int64_t k, int64_t count) {
    const auto v = Vec<acc_t>::loadu(dxhat + k, count) - mean_dxhat - Vec<acc_t>::loadu(xhat + k, count) * mean_dxhat_xhat;
    (s * v).store(dx + k, count);
  });
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
