// mux::multiplex on the CPU: Hadamard mix in one pass over x; matrix mix as one GEMM with K = N*d.
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "row_ops.h"

namespace mux::cpu {
namespace {

void check_multiplex_args(const at::Tensor& x, const at::Tensor& weight) {
  check_float(x, "x");
  check_rank(x, "x", 4, "(G, N, L, d)");
  check_same(weight, x, "weight", "x");
  TORCH_CHECK(weight.dim() == 2 || weight.dim() == 3,
              "weight must have shape (N, d) (Hadamard mix) or (N, d, d) (matrix mix), got shape ", weight.sizes());
  check_size(weight, "weight", 0, x.size(1), "x.shape[1] (N)");
  for (int64_t k = 1; k < weight.dim(); ++k) check_size(weight, "weight", k, x.size(3), "x.shape[3] (d)");
}

// (G, N, L, d) -> (G*L, N*d): the rows of the single GEMM of the matrix mix.
at::Tensor instances_as_columns(const at::Tensor& x) {
  const auto G = x.size(0), N = x.size(1), L = x.size(2), d = x.size(3);
  return x.to(at::kFloat).permute({0, 2, 1, 3}).reshape({G * L, N * d});
}

at::Tensor multiplex_cpu(const at::Tensor& x, const at::Tensor& weight, double scale) {
  check_multiplex_args(x, weight);
  const auto G = x.size(0), N = x.size(1), L = x.size(2), d = x.size(3);
  if (weight.dim() == 3) {
    auto out = at::mm(instances_as_columns(x), weight.to(at::kFloat).reshape({N * d, d})).mul_(scale);
    return out.view({G, L, d}).to(x.scalar_type());
  }
  auto out = at::empty({G, L, d}, x.options());
  if (out.numel() == 0) return out;
  const auto xc = x.contiguous();
  const auto wf = weight.to(at::kFloat).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mux_multiplex_cpu", [&] {
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    const float* wp = wf.const_data_ptr<float>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, G * L, grain_rows(N * d), [&](int64_t r0, int64_t r1) {
      std::vector<float> acc(d), buf(d);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t g = r / L, l = r % L;
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t i = 0; i < N; ++i) {
          const float* row = as_float(xp + ((g * N + i) * L + l) * d, buf.data(), d);
          row_fma(acc.data(), row, wp + i * d, d);
        }
        for (int64_t k = 0; k < d; ++k) acc[k] *= static_cast<float>(scale);
        store_from_float(acc.data(), op + r * d, d);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> multiplex_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                          const at::Tensor& weight, double scale) {
  check_multiplex_args(x, weight);
  const auto G = x.size(0), N = x.size(1), L = x.size(2), d = x.size(3);
  check_same(grad_out, x, "grad_out", "x");
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({G, L, d}), "grad_out must have shape (G, L, d) = (", G, ", ",
              L, ", ", d, "), got ", grad_out.sizes());
  if (weight.dim() == 3) {
    const auto go = grad_out.to(at::kFloat).reshape({G * L, d});
    const auto wf = weight.to(at::kFloat).reshape({N * d, d});
    auto grad_x = at::mm(go, wf.t()).mul_(scale).view({G, L, N, d}).permute({0, 2, 1, 3});
    auto grad_w = at::mm(instances_as_columns(x).t(), go).mul_(scale).view({N, d, d});
    return {grad_x.to(x.scalar_type()).contiguous(), grad_w.to(weight.scalar_type())};
  }
  auto grad_x = at::empty_like(x, at::MemoryFormat::Contiguous);
  const auto xc = x.contiguous();
  const auto goc = grad_out.contiguous();
  const auto wf = weight.to(at::kFloat).contiguous();
  const int64_t rows = G * L, chunks = num_chunks(rows);
  auto partial_w = at::zeros({chunks, N, d}, x.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mux_multiplex_backward_cpu", [&] {
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    const scalar_t* gp = goc.const_data_ptr<scalar_t>();
    const float* wp = wf.const_data_ptr<float>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    float* pw = partial_w.mutable_data_ptr<float>();
    parallel_chunks(rows, chunks, [&](int64_t c, int64_t r0, int64_t r1) {
      std::vector<float> go(d), xbuf(d), gx(d);
      float* dw = pw + c * N * d;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t g = r / L, l = r % L;
        const float* gor = as_float(gp + r * d, go.data(), d);
        for (int64_t i = 0; i < N; ++i) {
          const int64_t offset = ((g * N + i) * L + l) * d;
          const float* w = wp + i * d;
          for (int64_t k = 0; k < d; ++k) gx[k] = static_cast<float>(scale) * gor[k] * w[k];
          store_from_float(gx.data(), gxp + offset, d);
          row_fma(dw + i * d, as_float(xp + offset, xbuf.data(), d), gor, d);
        }
      }
    });
  });
  auto grad_w = partial_w.sum(0).mul_(scale);
  return {grad_x, grad_w.to(weight.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(mux, CPU, m) {
  m.impl("multiplex", &multiplex_cpu);
  m.impl("multiplex_backward", &multiplex_backward_cpu);
}

}  // namespace mux::cpu
