// Input validation shared by the CPU kernels: every failure names the argument and what was expected.
#pragma once

#include <ATen/ATen.h>

namespace mux {

inline void check_float(const at::Tensor& t, const char* name) {
  const auto s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16 || s == at::kDouble, name,
              " must be float32, float16, bfloat16 or float64, got ", s);
}

inline void check_rank(const at::Tensor& t, const char* name, int64_t rank, const char* layout) {
  TORCH_CHECK(t.dim() == rank, name, " must have shape ", layout, " (", rank, " dims), got ", t.dim(),
              " dims with shape ", t.sizes());
}

inline void check_same(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " must have the dtype of ", ref_name, " (",
              ref.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), name, " must be on the device of ", ref_name, " (", ref.device(),
              "), got ", t.device());
}

inline void check_size(const at::Tensor& t, const char* name, int64_t dim, int64_t expected, const char* what) {
  TORCH_CHECK(t.size(dim) == expected, name, ".shape[", dim, "] must equal ", what, " = ", expected, ", got ",
              t.size(dim), " (shape ", t.sizes(), ")");
}

// Checks an index tensor and that every index lies in [0, upper): a bad id is an error, never an
// out-of-bounds read.
inline void check_indices(const at::Tensor& t, const char* name, int64_t upper, const char* table) {
  TORCH_CHECK(t.scalar_type() == at::kLong || t.scalar_type() == at::kInt, name,
              " must be int64 (or int32) token ids, got ", t.scalar_type());
  if (t.numel() == 0) return;
  auto [lo, hi] = at::aminmax(t);
  const int64_t min_id = lo.item<int64_t>(), max_id = hi.item<int64_t>();
  TORCH_CHECK(min_id >= 0 && max_id < upper, name, " must lie in [0, ", upper, ") (the rows of ", table,
              "), got values in [", min_id, ", ", max_id, "]");
}

}  // namespace mux
