"""Test-session setup that must happen before mux_kernels (and triton) are imported.

- Kernel outputs start as NaN (MUX_KERNELS_POISON_OUTPUTS=1): an element a kernel forgets to write
  fails the comparison with the reference.
- On a machine without a GPU the Triton kernels run on CPU tensors through the interpreter, which
  must be switched on before triton is imported: tests/test_triton.py then checks the launchers
  directly, and with MUX_KERNELS_BACKEND=triton every op suite runs through them.
"""

import os

import torch

os.environ.setdefault("MUX_KERNELS_POISON_OUTPUTS", "1")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
