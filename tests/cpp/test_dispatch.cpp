// Calls mux::multiplex through the dispatcher from plain C++ (no Python) and checks it against
// the same math in ATen, and that a bad argument raises a c10::Error naming it.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <iostream>
#include <string>

int main() {
  auto multiplex = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mux::multiplex", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double)>();
  const int64_t G = 3, N = 5, L = 7, d = 33;
  at::manual_seed(0);
  const auto x = at::randn({G, N, L, d});
  const auto w = at::randn({N, d});
  const auto out = multiplex.call(x, w, 1.0 / N);
  const auto expected = (x * w.view({1, N, 1, d})).sum(1) / N;
  if (!at::allclose(out, expected, 1e-5, 1e-5)) {
    std::cerr << "mux::multiplex differs from the ATen reference by " << (out - expected).abs().max().item<float>()
              << "\n";
    return 1;
  }
  try {
    multiplex.call(x, w.narrow(0, 0, N - 1), 1.0);
    std::cerr << "mux::multiplex accepted a weight with the wrong N\n";
    return 1;
  } catch (const c10::Error& e) {
    if (std::string(e.what_without_backtrace()).find("weight.shape[0]") == std::string::npos) {
      std::cerr << "unexpected error message: " << e.what_without_backtrace() << "\n";
      return 1;
    }
  }
  std::cout << "mux::multiplex through the dispatcher: OK\n";
  return 0;
}
