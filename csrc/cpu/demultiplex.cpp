// mux::demultiplex on the CPU, factorised so the (G, N, L, 2d) concatenation never exists:
//   P = h @ W_h^T   one GEMM over the G*L rows,
//   K = keys @ W_k^T + b   one GEMM over the N (or G*N) keys,
//   out[g, i, l] = LN(GELU(P[g, l] + K[g, i]))   one pass over the output, row in an fp32 buffer.
// The backward recomputes P and K, goes back through LN and GELU in one pass that sums the
// pre-activation gradient over instances (dP) and over positions (dK), then finishes with GEMMs.
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "../no_autocast.h"
#include "../outputs.h"
#include "gelu.h"
#include "row_ops.h"

namespace mux::cpu {
namespace {

void check_demultiplex_args(const at::Tensor& h, const at::Tensor& keys, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& ln_weight,
                            const std::optional<at::Tensor>& ln_bias) {
  check_float(h, "h");
  check_rank(h, "h", 3, "(G, L, d)");
  const int64_t G = h.size(0), d = h.size(2);
  check_same(keys, h, "keys", "h");
  TORCH_CHECK(keys.dim() == 2 || keys.dim() == 3,
              "keys must have shape (N, d) (shared keys) or (G, N, d) (per-group keys), got shape ", keys.sizes());
  if (keys.dim() == 3) check_size(keys, "keys", 0, G, "h.shape[0] (G)");
  check_size(keys, "keys", keys.dim() - 1, d, "h.shape[2] (d)");
  check_same(weight, h, "weight", "h");
  check_rank(weight, "weight", 2, "(e, 2d)");
  check_size(weight, "weight", 1, 2 * d, "2 * h.shape[2] (2d)");
  const int64_t e = weight.size(0);
  const std::pair<const std::optional<at::Tensor>*, const char*> vectors[] = {
      {&bias, "bias"}, {&ln_weight, "ln_weight"}, {&ln_bias, "ln_bias"}};
  for (const auto& [t, name] : vectors) {
    if (!t->has_value()) continue;
    check_same(**t, h, name, "h");
    check_rank(**t, name, 1, "(e,)");
    check_size(**t, name, 0, e, "weight.shape[0] (e)");
  }
  TORCH_CHECK(!ln_bias || ln_weight, "ln_bias was given without ln_weight: pass ln_weight to apply the LayerNorm");
}

struct Projections {
  at::Tensor h2, k2, wk, wh, P, K;  // in the accumulation dtype
  int64_t G, N, L, d, e;
  bool shared_keys;

  Projections(const at::Tensor& h, const at::Tensor& keys, const at::Tensor& weight,
              const std::optional<at::Tensor>& bias)
      : G(h.size(0)), N(keys.size(-2)), L(h.size(1)), d(h.size(2)), e(weight.size(0)), shared_keys(keys.dim() == 2) {
    const auto acc = acc_dtype(h.scalar_type());
    const auto w = weight.to(acc);
    // A contiguous W_h: the big GEMM runs ~10% faster than on the strided view. The key GEMM has
    // N (or G*N) rows, too few for the copy of W_k to pay.
    wk = w.narrow(1, 0, d);
    wh = w.narrow(1, d, d).contiguous();
    h2 = h.to(acc).reshape({G * L, d});
    k2 = keys.to(acc).reshape({shared_keys ? N : G * N, d});  // not {-1, d}: d may be 0
    P = at::mm(h2, wh.t());
    K = bias ? at::addmm(bias->to(acc), k2, wk.t()) : at::mm(k2, wk.t());
  }
  int64_t key_row(int64_t g, int64_t i) const { return shared_keys ? i : g * N + i; }
};

at::Tensor demultiplex_cpu(const at::Tensor& h, const at::Tensor& keys, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& ln_weight,
                           const std::optional<at::Tensor>& ln_bias, double eps) {
  MUX_NO_AUTOCAST();
  check_demultiplex_args(h, keys, weight, bias, ln_weight, ln_bias);
  const int64_t G = h.size(0), N = keys.size(-2), L = h.size(1), e = weight.size(0);
  auto out = new_output({G, N, L, e}, h.options());
  if (out.numel() == 0) return out;
  const Projections p(h, keys, weight, bias);
  const auto acc = acc_dtype(h.scalar_type());
  // Without ln_bias the LayerNorm adds zeros.
  const auto ln_w = ln_weight ? ln_weight->to(acc).contiguous() : at::Tensor();
  const auto ln_b = ln_bias ? ln_bias->to(acc).contiguous() : at::zeros({e}, h.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "mux_demultiplex_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const acc_t* P = p.P.const_data_ptr<acc_t>();
    const acc_t* K = p.K.const_data_ptr<acc_t>();
    const acc_t* lw = ln_w.defined() ? ln_w.const_data_ptr<acc_t>() : nullptr;
    const acc_t* lb = ln_b.const_data_ptr<acc_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, G * L, grain_rows(N * e), [&](int64_t r0, int64_t r1) {
      std::vector<acc_t> a(e);  // GELU output of one row, for the LayerNorm's second and third passes
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t g = r / L, l = r % L;
        const acc_t* pr = P + r * e;
        for (int64_t i = 0; i < N; ++i) {
          const acc_t* k = K + p.key_row(g, i) * e;
          scalar_t* o = op + ((g * N + i) * L + l) * e;
          const auto activation = [&](int64_t c, int64_t count) {
            return gelu(Vec<acc_t>::loadu(pr + c, count) + Vec<acc_t>::loadu(k + c, count));
          };
          if (!lw) {
            for_each_vec<acc_t>(e, [&](int64_t c, int64_t count) { store_acc(activation(c, count), o + c, count); });
            continue;
          }
          const auto [mean, rstd] = store_row_moments(a.data(), e, static_cast<acc_t>(eps), activation);
          layer_norm_store(a.data(), e, mean, rstd, lw, lb, o);
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> demultiplex_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& h, const at::Tensor& keys, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& ln_weight,
    const std::optional<at::Tensor>& ln_bias, double eps) {
  MUX_NO_AUTOCAST();
  check_demultiplex_args(h, keys, weight, bias, ln_weight, ln_bias);
  const int64_t G = h.size(0), N = keys.size(-2), L = h.size(1), d = h.size(2), e = weight.size(0);
  check_same(grad_out, h, "grad_out", "h");
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({G, N, L, e}), "grad_out must have shape (G, N, L, e) = (", G,
              ", ", N, ", ", L, ", ", e, "), got ", grad_out.sizes());
  const Projections p(h, keys, weight, bias);
  const auto acc = h.options().dtype(acc_dtype(h.scalar_type()));
  // The LayerNorm bias does not enter any gradient but its own.
  const auto ln_w = ln_weight ? ln_weight->to(acc).contiguous() : at::Tensor();
  const auto goc = grad_out.contiguous();
  const int64_t rows = G * L, chunks = num_chunks(rows), key_rows = p.K.size(0);
  auto dP = new_output({rows, e}, acc);
  auto partial_dK = at::zeros({chunks, key_rows, e}, acc);
  auto partial_ln_w = at::zeros({chunks, e}, acc), partial_ln_b = at::zeros({chunks, e}, acc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "mux_demultiplex_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const acc_t* P = p.P.const_data_ptr<acc_t>();
    const acc_t* K = p.K.const_data_ptr<acc_t>();
    const acc_t* lw = ln_w.defined() ? ln_w.const_data_ptr<acc_t>() : nullptr;
    const scalar_t* gp = goc.const_data_ptr<scalar_t>();
    acc_t* dPp = dP.mutable_data_ptr<acc_t>();
    parallel_chunks(rows, chunks, [&](int64_t c, int64_t r0, int64_t r1) {
      std::vector<acc_t> z(e), a(e), da(e), buf(e);
      acc_t* dK = partial_dK.mutable_data_ptr<acc_t>() + c * key_rows * e;
      acc_t* dlw = partial_ln_w.mutable_data_ptr<acc_t>() + c * e;
      acc_t* dlb = partial_ln_b.mutable_data_ptr<acc_t>() + c * e;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t g = r / L, l = r % L;
        acc_t* dp = dPp + r * e;
        std::fill(dp, dp + e, acc_t(0));
        for (int64_t i = 0; i < N; ++i) {
          const int64_t kr = p.key_row(g, i);
          add_rows(P + r * e, K + kr * e, z.data(), e);
          const acc_t* go = as_acc(gp + ((g * N + i) * L + l) * e, buf.data(), e);
          if (lw) {
            gelu_row_with_derivative(z.data(), a.data(), e);  // z := GELU'(z)
            const acc_t rstd = layer_norm_row(a.data(), e, static_cast<acc_t>(eps));  // a := xhat
            row_fma(dlw, go, a.data(), e);
            row_add(dlb, go, e);
            mul_rows(go, lw, da.data(), e);
            layer_norm_backward_row(da.data(), a.data(), rstd, da.data(), e);
            mul_rows(da.data(), z.data(), da.data(), e);
          } else {
            gelu_backward_row(go, z.data(), da.data(), e);
          }
          row_add(dp, da.data(), e);
          row_add(dK + kr * e, da.data(), e);
        }
      }
    });
  });
  const auto dK = partial_dK.sum(0);
  auto grad_h = at::mm(dP, p.wh).view({G, L, d});
  auto grad_keys = at::mm(dK, p.wk).view(keys.sizes());
  auto grad_weight = at::cat({at::mm(dK.t(), p.k2), at::mm(dP.t(), p.h2)}, 1);
  const auto dtype = h.scalar_type();
  return {grad_h.to(dtype),         grad_keys.to(dtype),           grad_weight.to(dtype), dK.sum(0).to(dtype),
          partial_ln_w.sum(0).to(dtype), partial_ln_b.sum(0).to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(mux, CPU, m) {
  m.impl("demultiplex", &demultiplex_cpu);
  m.impl("demultiplex_backward", &demultiplex_backward_cpu);
}

}  // namespace mux::cpu
