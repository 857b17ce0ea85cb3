// The Python module mux_kernels._C. Importing it loads this library, whose static initialisers run
// the TORCH_LIBRARY registrations in ops.cpp and cpu/*.cpp; the module itself exports nothing.
// Built only by setup.py: the CMake build (for C++/libtorch users) leaves Python out.
#include <torch/extension.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
