#!/usr/bin/env bash
# The project's test command (README, CI): sets up .venv if needed, then runs the whole suite on the
# C++ backend, the op suites again on the Triton backend (through the Triton interpreter when
# there is no GPU), and the C++ (libtorch) build with its ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/mux-kernels ] || scripts/bootstrap.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}

echo "== C++ backend: all tests"
python -m pytest -q -m "not slow" "$@"

echo "== Triton backend: op tests"
MUX_KERNELS_BACKEND=triton python -m pytest -q -m "not slow" tests/test_ops.py tests/test_triton.py \
    tests/test_hardening.py tests/test_properties.py

echo "== libtorch build (CMake) + ctest"
cmake -S . -B cmake-build -DCMAKE_PREFIX_PATH="$(python -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')" > /dev/null
cmake --build cmake-build -j"$(nproc)" > /dev/null
ctest --test-dir cmake-build --output-on-failure
