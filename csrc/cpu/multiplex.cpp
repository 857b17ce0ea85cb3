// mux::multiplex on the CPU: Hadamard mix in one pass over x; matrix mix as one GEMM with K = N*d.
#include <torch/library.h>

#include "../checks.h"
#include "../no_autocast.h"
#include "../outputs.h"
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

// (G, N, L, d) -> (G*L, N*d) in the accumulation dtype: the rows of the single GEMM of the matrix mix.
at::Tensor instances_as_columns(const at::Tensor& x) {
  const auto G = x.size(0), N = x.size(1), L = x.size(2), d = x.size(3);
  return x.to(acc_dtype(x.scalar_type())).permute({0, 2, 1, 3}).reshape({G * L, N * d});
}

at::Tensor multiplex_cpu(const at::Tensor& x, const at::Tensor& weight, double scale) {
  MUX_NO_AUTOCAST();
  check_multiplex_args(x, weight);
  const auto G = x.size(0), N = x.size(1), L = x.size(2), d = x.size(3);
  const auto acc = acc_dtype(x.scalar_type());
  if (weight.dim() == 3) {
    auto out = at::mm(instances_as_columns(x), weight.to(acc).reshape({N * d, d})).mul_(scale);
    return out.view({G, L, d}).to(x.scalar_type());
  }
  auto out = new_output({G, L, d}, x.options());
  if (out.numel() == 0) return out;
  const auto xc = x.contiguous();
  const auto wf = weight.to(acc).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mux_multiplex_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    const acc_t* wp = wf.const_data_ptr<acc_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const int64_t plane = L * d;  // from one instance of a group to the next
    const Vec<acc_t> vscale(static_cast<acc_t>(scale));
    // Each output vector is summed over the N instances in a register and written once.
    at::parallel_for(0, G * L, grain_rows(N * d), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* x0 = xp + ((r / L) * N * L + r % L) * d;  // instance 0 of row r
        for_each_vec<acc_t>(d, [&](int64_t k, int64_t count) {
          Vec<acc_t> sum(acc_t(0));
          for (int64_t i = 0; i < N; ++i)
            sum = at::vec::fmadd(load_acc<acc_t>(x0 + i * plane + k, count), Vec<acc_t>::loadu(wp + i * d + k, count), sum);
          store_acc(sum * vscale, op + r * d + k, count);
        });
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> multiplex_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                          const at::Tensor& weight, double scale) {
  MUX_NO_AUTOCAST();
  check_multiplex_args(x, weight);
  const auto G = x.size(0), N = x.size(1), L = x.size(2), d = x.size(3);
  check_same(grad_out, x, "grad_out", "x");
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({G, L, d}), "grad_out must have shape (G, L, d) = (", G, ", ",
              L, ", ", d, "), got ", grad_out.sizes());
  const auto acc = acc_dtype(x.scalar_type());
  if (weight.dim() == 3) {
    const auto go = grad_out.to(acc).reshape({G * L, d});
    const auto wf = weight.to(acc).reshape({N * d, d});
    auto grad_x = at::mm(go, wf.t()).mul_(scale).view({G, L, N, d}).permute({0, 2, 1, 3});
    auto grad_w = at::mm(instances_as_columns(x).t(), go).mul_(scale).view({N, d, d});
    return {grad_x.to(x.scalar_type()).contiguous(), grad_w.to(weight.scalar_type())};
  }
  auto grad_x = new_output(x.sizes(), x.options());
  const auto xc = x.contiguous();
  const auto goc = grad_out.contiguous();
  const auto wf = weight.to(acc).contiguous();
  const int64_t rows = G * L, chunks = num_chunks(rows);
  auto partial_w = at::zeros({chunks, N, d}, x.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mux_multiplex_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    const scalar_t* gp = goc.const_data_ptr<scalar_t>();
    const acc_t* wp = wf.const_data_ptr<acc_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    acc_t* pw = partial_w.mutable_data_ptr<acc_t>();
    const int64_t plane = L * d;
    const Vec<acc_t> vscale(static_cast<acc_t>(scale));
    parallel_chunks(rows, chunks, [&](int64_t c, int64_t r0, int64_t r1) {
      acc_t* dw = pw + c * N * d;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t offset0 = ((r / L) * N * L + r % L) * d;  // instance 0 of row r
        for_each_vec<acc_t>(d, [&](int64_t k, int64_t count) {
          const auto go = load_acc<acc_t>(gp + r * d + k, count);
          const auto scaled_go = go * vscale;
          for (int64_t i = 0; i < N; ++i) {
            const int64_t at_x = offset0 + i * plane + k, at_w = i * d + k;
            store_acc(scaled_go * Vec<acc_t>::loadu(wp + at_w, count), gxp + at_x, count);
            at::vec::fmadd(load_acc<acc_t>(xp + at_x, count), go, Vec<acc_t>::loadu(dw + at_w, count)).store(dw + at_w, count);
          }
        });
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
