// The mux op library: every schema lives here. Kernels register per backend (csrc/cpu/*.cpp for
// the CPU; the Triton launchers in mux_kernels/triton register CUDA from Python).
#include <torch/library.h>

TORCH_LIBRARY(mux, m) {
  // Public ops (contracts in DESIGN.md §3).
  m.def("multiplex(Tensor x, Tensor weight, float scale) -> Tensor");
  m.def(
      "multiplex_embeddings(Tensor ids, Tensor? token_type_ids, Tensor word, Tensor pos, Tensor type, "
      "Tensor ln_weight, Tensor ln_bias, Tensor weight, float scale, float eps) -> Tensor");
  m.def(
      "demultiplex(Tensor h, Tensor keys, Tensor weight, Tensor? bias, Tensor? ln_weight, Tensor? ln_bias, "
      "float eps) -> Tensor");
  // Private backward ops, used by the autograd registration in mux_kernels/ops.py. Each recomputes
  // the cheap forward intermediates instead of saving them, so the forward stays one write.
  m.def("multiplex_backward(Tensor grad_out, Tensor x, Tensor weight, float scale) -> (Tensor, Tensor)");
  m.def(
      "multiplex_embeddings_backward(Tensor grad_out, Tensor ids, Tensor? token_type_ids, Tensor word, "
      "Tensor pos, Tensor type, Tensor ln_weight, Tensor ln_bias, Tensor weight, float scale, float eps) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "demultiplex_backward(Tensor grad_out, Tensor h, Tensor keys, Tensor weight, Tensor? bias, "
      "Tensor? ln_weight, Tensor? ln_bias, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
