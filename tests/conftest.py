"""Test-session setup that must happen before mux_kernels (and triton) are imported.

- Kernel outputs start as NaN (MUX_KERNELS_POISON_OUTPUTS=1): an element a kernel forgets to write
  fails the comparison with the reference.
- With MUX_KERNELS_BACKEND=triton on a machine without a GPU, the Triton kernels run on CPU
  tensors through the interpreter, which must be switched on before triton is imported.
"""

import os

os.environ.setdefault("MUX_KERNELS_POISON_OUTPUTS", "1")
if os.environ.get("MUX_KERNELS_BACKEND") == "triton":
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
