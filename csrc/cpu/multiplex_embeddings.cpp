// mux::multiplex_embeddings on the CPU: token ids -> encoder input in one pass per (group, position).
// Each of the N word rows is read once, normalised and mixed in an fp32 (fp64 for fp64) buffer; nothing of size
// (G, N, L, d) is written. The backward recomputes the per-instance LayerNorms the same way.
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "../no_autocast.h"
#include "../outputs.h"
#include "row_ops.h"

namespace mux::cpu {
namespace {

void check_embedding_args(const at::Tensor& ids, const std::optional<at::Tensor>& token_type_ids,
                          const at::Tensor& word, const at::Tensor& pos, const at::Tensor& type,
                          const at::Tensor& ln_weight, const at::Tensor& ln_bias, const at::Tensor& weight) {
  check_rank(ids, "ids", 3, "(G, N, L)");
  check_float(word, "word");
  check_rank(word, "word", 2, "(V, d)");
  const int64_t d = word.size(1);
  TORCH_CHECK(ids.device() == word.device(), "ids must be on the device of word (", word.device(), "), got ",
              ids.device());
  check_rank(pos, "pos", 2, "(max_positions, d)");
  check_rank(type, "type", 2, "(type_vocab_size, d)");
  check_rank(ln_weight, "ln_weight", 1, "(d,)");
  check_rank(ln_bias, "ln_bias", 1, "(d,)");
  check_rank(weight, "weight", 2, "(N, d)");
  const std::pair<const at::Tensor*, const char*> tables[] = {
      {&pos, "pos"}, {&type, "type"}, {&ln_weight, "ln_weight"}, {&ln_bias, "ln_bias"}, {&weight, "weight"}};
  for (const auto& [t, name] : tables) {
    check_same(*t, word, name, "word");
    check_size(*t, name, t->dim() - 1, d, "word.shape[1] (d)");
  }
  check_size(weight, "weight", 0, ids.size(1), "ids.shape[1] (N)");
  TORCH_CHECK(ids.size(2) <= pos.size(0), "ids.shape[2] (L = ", ids.size(2),
              ") must not exceed the rows of pos (max_positions = ", pos.size(0), ")");
  TORCH_CHECK(type.size(0) >= 1, "type must have at least one row (token type 0)");
  check_indices(ids, "ids", word.size(0), "word");
  if (token_type_ids) {
    TORCH_CHECK(token_type_ids->sizes() == ids.sizes(), "token_type_ids must have the shape of ids ",
                ids.sizes(), ", got ", token_type_ids->sizes());
    TORCH_CHECK(token_type_ids->device() == word.device(), "token_type_ids must be on the device of word (",
                word.device(), "), got ", token_type_ids->device());
    check_indices(*token_type_ids, "token_type_ids", type.size(0), "type");
  }
}

template <typename scalar_t, typename acc_t>
struct RowMixer;

// What forward and backward both read: the small tables as rows in the accumulation dtype
// (positions 0..L-1, token types, LayerNorm affine, mix vectors), the ids as int64, and the word
// table with unit column stride.
struct EmbeddingInputs {
  at::Tensor ids, tts, word, pos, type, ln_w, ln_b, weight;
  int64_t N, L, d;

  EmbeddingInputs(const at::Tensor& ids_, const std::optional<at::Tensor>& tts_, const at::Tensor& word_,
                  const at::Tensor& pos_, const at::Tensor& type_, const at::Tensor& ln_w_, const at::Tensor& ln_b_,
                  const at::Tensor& weight_)
      : ids(ids_.to(at::kLong).contiguous()),
        tts(tts_ ? tts_->to(at::kLong).contiguous() : at::Tensor()),
        word(word_.stride(1) == 1 ? word_ : word_.contiguous()),
        N(ids_.size(1)),
        L(ids_.size(2)),
        d(word_.size(1)) {
    const auto acc = acc_dtype(word_.scalar_type());
    pos = pos_.narrow(0, 0, L).to(acc).contiguous();
    type = type_.to(acc).contiguous();
    ln_w = ln_w_.to(acc).contiguous();
    ln_b = ln_b_.to(acc).contiguous();
    weight = weight_.to(acc).contiguous();
  }

  const int64_t* token_types() const { return tts.defined() ? tts.const_data_ptr<int64_t>() : nullptr; }

  template <typename scalar_t, typename acc_t = acc_type<scalar_t>>
  RowMixer<scalar_t, acc_t> mixer(double scale, double eps) const {
    return {word.const_data_ptr<scalar_t>(), word.stride(0), *this, static_cast<acc_t>(scale),
            static_cast<acc_t>(eps)};
  }
};

// Per-(g, l) recomputation shared by forward and backward: fills xhat (N x d, the normalised
// instance rows) and rstd (N), and leaves in `mix` the row that enters the second LayerNorm,
// returning that LayerNorm's mean and rstd.
template <typename scalar_t, typename acc_t = acc_type<scalar_t>>
struct RowMixer {
  const scalar_t* word;
  int64_t word_stride;
  const EmbeddingInputs& t;
  acc_t scale, eps;

  std::pair<acc_t, acc_t> operator()(int64_t g, int64_t l, acc_t* xhat, acc_t* rstd, acc_t* mix) const {
    const int64_t N = t.N, L = t.L, d = t.d;
    const int64_t* ids = t.ids.const_data_ptr<int64_t>();
    const int64_t* tts = t.token_types();  // nullptr: all type 0
    const acc_t* pos = t.pos.const_data_ptr<acc_t>() + l * d;
    const acc_t* type = t.type.const_data_ptr<acc_t>();
    const acc_t* ln_w = t.ln_w.const_data_ptr<acc_t>();
    const acc_t* ln_b = t.ln_b.const_data_ptr<acc_t>();
    const acc_t* w = t.weight.const_data_ptr<acc_t>();
    using V = Vec<acc_t>;
    std::fill(mix, mix + d, acc_t(0));
    for (int64_t i = 0; i < N; ++i) {
      const int64_t idx = (g * N + i) * L + l;
      const scalar_t* word_row = word + ids[idx] * word_stride;
      const acc_t* type_row = type + (tts ? tts[idx] : 0) * d;
      acc_t* x = xhat + i * d;
      const auto [mean, instance_rstd] = store_row_moments(x, d, eps, [&](int64_t k, int64_t count) {
        return load_acc<acc_t>(word_row + k, count) + V::loadu(pos + k, count) + V::loadu(type_row + k, count);
      });
      rstd[i] = instance_rstd;
      const V m(mean), s(instance_rstd);
      for_each_vec<acc_t>(d, [&](int64_t k, int64_t count) {
        const auto xh = (V::loadu(x + k, count) - m) * s;
        xh.store(x + k, count);
        const auto e = at::vec::fmadd(xh, V::loadu(ln_w + k, count), V::loadu(ln_b + k, count));
        at::vec::fmadd(e, V::loadu(w + i * d + k, count), V::loadu(mix + k, count)).store(mix + k, count);
      });
    }
    const V vscale(scale);
    return store_row_moments(mix, d, eps, [&](int64_t k, int64_t count) {
      return at::vec::fmadd(V::loadu(mix + k, count), vscale, V::loadu(pos + k, count) + V::loadu(type + k, count));
    });
  }
};

// table[index[r]] += rows[r] for every row r (both in the accumulation dtype, contiguous). Threads
// split the columns, not the rows, so no two write one element: no atomics, a fixed summation order
// (reproducible results), and no per-row dispatch as in index_add_.
void scatter_add_rows(at::Tensor& table, const at::Tensor& index, const at::Tensor& rows) {
  const int64_t R = rows.size(0), d = rows.size(1);
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "mux_scatter_add_rows", [&] {
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* src = rows.const_data_ptr<scalar_t>();
    scalar_t* dst = table.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, d, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t r = 0; r < R; ++r) row_add(dst + idx[r] * d + c0, src + r * d + c0, c1 - c0);
    });
  });
}

at::Tensor multiplex_embeddings_cpu(const at::Tensor& ids, const std::optional<at::Tensor>& token_type_ids,
                                    const at::Tensor& word, const at::Tensor& pos, const at::Tensor& type,
                                    const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                    const at::Tensor& weight, double scale, double eps) {
  MUX_NO_AUTOCAST();
  check_embedding_args(ids, token_type_ids, word, pos, type, ln_weight, ln_bias, weight);
  const int64_t G = ids.size(0), N = ids.size(1), L = ids.size(2), d = word.size(1);
  auto out = new_output({G, L, d}, word.options());
  if (out.numel() == 0) return out;
  const EmbeddingInputs in(ids, token_type_ids, word, pos, type, ln_weight, ln_bias, weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, word.scalar_type(), "mux_multiplex_embeddings_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const auto mixer = in.mixer<scalar_t>(scale, eps);
    const acc_t* ln_w = in.ln_w.const_data_ptr<acc_t>();
    const acc_t* ln_b = in.ln_b.const_data_ptr<acc_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, G * L, grain_rows(N * d), [&](int64_t r0, int64_t r1) {
      std::vector<acc_t> xhat(N * d), rstd(N), mix(d);
      for (int64_t r = r0; r < r1; ++r) {
        const auto [mean, rstd_final] = mixer(r / L, r % L, xhat.data(), rstd.data(), mix.data());
        layer_norm_store(mix.data(), d, mean, rstd_final, ln_w, ln_b, op + r * d);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> multiplex_embeddings_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& ids, const std::optional<at::Tensor>& token_type_ids,
    const at::Tensor& word, const at::Tensor& pos, const at::Tensor& type, const at::Tensor& ln_weight,
    const at::Tensor& ln_bias, const at::Tensor& weight, double scale, double eps) {
  MUX_NO_AUTOCAST();
  check_embedding_args(ids, token_type_ids, word, pos, type, ln_weight, ln_bias, weight);
  const int64_t G = ids.size(0), N = ids.size(1), L = ids.size(2), d = word.size(1);
  check_same(grad_out, word, "grad_out", "word");
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({G, L, d}), "grad_out must have shape (G, L, d) = (", G, ", ", L,
              ", ", d, "), got ", grad_out.sizes());
  const auto acc = word.options().dtype(acc_dtype(word.scalar_type()));
  const EmbeddingInputs in(ids, token_type_ids, word, pos, type, ln_weight, ln_bias, weight);
  const auto goc = grad_out.contiguous();
  // Gradients w.r.t. each instance's first-LayerNorm input, scattered into the word table afterwards.
  // Position and token-type gradients (small tables) sum into per-chunk partials in the same pass.
  auto grad_rows = new_output({G, N, L, d}, acc);
  const int64_t rows = G * L, chunks = num_chunks(rows), types = type.size(0);
  auto partial_ln_w = at::zeros({chunks, d}, acc), partial_ln_b = at::zeros({chunks, d}, acc);
  auto partial_w = at::zeros({chunks, N, d}, acc);
  auto partial_pos = at::zeros({chunks, L, d}, acc), partial_type = at::zeros({chunks, types, d}, acc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, word.scalar_type(), "mux_multiplex_embeddings_bwd", [&] {
    using acc_t = acc_type<scalar_t>;
    const auto mixer = in.mixer<scalar_t>(scale, eps);
    const acc_t* ln_w = in.ln_w.const_data_ptr<acc_t>();
    const acc_t* ln_b = in.ln_b.const_data_ptr<acc_t>();
    const acc_t* w = in.weight.const_data_ptr<acc_t>();
    const scalar_t* gp = goc.const_data_ptr<scalar_t>();
    const int64_t* tts = in.token_types();
    acc_t* grow = grad_rows.mutable_data_ptr<acc_t>();
    parallel_chunks(rows, chunks, [&](int64_t c, int64_t r0, int64_t r1) {
      std::vector<acc_t> xhat(N * d), rstd(N), mix(d), buf(d), e(d), de(d), dm(d);
      acc_t* dln_w = partial_ln_w.mutable_data_ptr<acc_t>() + c * d;
      acc_t* dln_b = partial_ln_b.mutable_data_ptr<acc_t>() + c * d;
      acc_t* dw = partial_w.mutable_data_ptr<acc_t>() + c * N * d;
      acc_t* dpos = partial_pos.mutable_data_ptr<acc_t>() + c * L * d;
      acc_t* dtype = partial_type.mutable_data_ptr<acc_t>() + c * types * d;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t g = r / L, l = r % L;
        const auto [mean, rstd_final] = mixer(g, l, xhat.data(), rstd.data(), mix.data());
        normalize_row(mix.data(), d, mean, rstd_final);  // mix := xhat of the second LayerNorm
        const acc_t* go = as_acc(gp + r * d, buf.data(), d);
        row_fma(dln_w, go, mix.data(), d);
        row_add(dln_b, go, d);
        mul_rows(go, ln_w, dm.data(), d);
        layer_norm_backward_row(dm.data(), mix.data(), rstd_final, dm.data(), d);
        row_add(dpos + l * d, dm.data(), d);
        row_add(dtype, dm.data(), d);  // the second pass adds type[0]
        // Mix and first LayerNorm of every instance.
        for (int64_t i = 0; i < N; ++i) {
          const acc_t* x = xhat.data() + i * d;
          affine_row(x, ln_w, ln_b, e.data(), d);
          row_fma(dw + i * d, dm.data(), e.data(), d);
          mul_rows(dm.data(), w + i * d, de.data(), d, static_cast<acc_t>(scale));
          row_fma(dln_w, de.data(), x, d);
          row_add(dln_b, de.data(), d);
          const int64_t idx = (g * N + i) * L + l;
          acc_t* dx = grow + idx * d;
          mul_rows(de.data(), ln_w, dx, d);
          layer_norm_backward_row(dx, x, rstd[i], dx, d);
          row_add(dpos + l * d, dx, d);
          row_add(dtype + (tts ? tts[idx] : 0) * d, dx, d);
        }
      }
    });
  });
  const auto flat_rows = grad_rows.view({G * N * L, d});  // not {-1, d}: d may be 0
  auto grad_word = at::zeros({word.size(0), d}, acc);
  scatter_add_rows(grad_word, in.ids, flat_rows);
  auto grad_pos = at::zeros({pos.size(0), d}, acc);
  grad_pos.narrow(0, 0, L).copy_(partial_pos.sum(0));
  auto grad_weight = partial_w.sum(0).mul_(scale);
  const auto dtype = word.scalar_type();
  return {grad_word.to(dtype),           grad_pos.to(dtype),          partial_type.sum(0).to(dtype),
          partial_ln_w.sum(0).to(dtype), partial_ln_b.sum(0).to(dtype), grad_weight.to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(mux, CPU, m) {
  m.impl("multiplex_embeddings", &multiplex_embeddings_cpu);
  m.impl("multiplex_embeddings_backward", &multiplex_embeddings_backward_cpu);
}

}  // namespace mux::cpu
