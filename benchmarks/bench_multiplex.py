"""mux.multiplex, Hadamard mix (gaussian_hadamard, every released model): out = (1/N)·Σ_i x[:, i] ⊙ v_i.

Unavoidable traffic: forward reads x and v and writes out; backward reads grad_out, x and v and
writes grad_x and grad_v. No GEMM.
"""

import pytest
import torch

from harness import DEVICE, MODES, compiled, measure_op
from mux_kernels import reference

PROVIDERS = {
    "mux_kernels": torch.ops.mux.multiplex,
    "eager": reference.multiplex,
    "compiled": compiled(reference.multiplex),
}


def traffic(shape, itemsize):
    x, v, out = shape.G * shape.N * shape.L * shape.d, shape.N * shape.d, shape.G * shape.L * shape.d
    return itemsize * (x + v + out), itemsize * (out + x + v + x + v)


@pytest.mark.benchmark(group="multiplex")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_multiplex(benchmark, budget_s, copy_gbps, shape, dtype, provider, mode):
    x = torch.randn(shape.G, shape.N, shape.L, shape.d, device=DEVICE, dtype=dtype, requires_grad=True)
    v = torch.randn(shape.N, shape.d, device=DEVICE, dtype=dtype, requires_grad=True)
    measure_op(
        benchmark, op="multiplex", provider=provider, fn=PROVIDERS[provider], inputs=(x, v, 1.0 / shape.N),
        shape=shape, mode=mode, traffic=traffic(shape, x.element_size()), copy_gbps=copy_gbps, budget_s=budget_s,
    )  # fmt: skip
