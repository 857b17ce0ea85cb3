"""mux.demultiplex, RSA keys (index_pos, every released MUX-PLM): out[g, i, l] = LN(GELU(W·[k_i ; h[g, l]] + b)),
h (G, L, d), keys (N, d), W (d, 2d): (G, N, L, d) out.

Baselines: ``eager`` is the reference as the original code computes it (concat, then one Linear over
2d features per instance-token); ``compiled`` is that under torch.compile; ``compiled_factorised``
compiles ``reference.demultiplex_factorised`` (W_h·h once per token, W_k·k once per key, no concat),
the stronger baseline.

Unavoidable traffic: forward reads h, keys, W, b and the LayerNorm vectors and writes out; backward
reads grad_out and the forward's inputs and writes their gradients. FLOPs are those of the
factorised GEMMs, the least work the math needs: forward W_h·h (2·G·L·d·e) and W_k·k (2·N·d·e);
backward twice that (the gradients of the inputs and of W).
"""

import pytest
import torch

from harness import DEVICE, MODES, compiled, measure_op
from mux_kernels import reference

PROVIDERS = {
    "mux_kernels": torch.ops.mux.demultiplex,
    "eager": reference.demultiplex,
    "compiled": compiled(reference.demultiplex),
    "compiled_factorised": compiled(reference.demultiplex_factorised),
}


def traffic(shape, itemsize):
    G, N, L, d = shape.G, shape.N, shape.L, shape.d
    inputs = G * L * d + N * d + d * 2 * d + 3 * d  # h, keys, W, b, LN weight and bias
    out = G * N * L * d
    return itemsize * (inputs + out), itemsize * (out + 2 * inputs)


def flops(shape):
    G, N, L, d = shape.G, shape.N, shape.L, shape.d
    forward = 2 * G * L * d * d + 2 * N * d * d
    return forward, 2 * forward


@pytest.mark.benchmark(group="demultiplex")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_demultiplex(benchmark, budget_s, copy_gbps, shape, dtype, provider, mode):
    def param(*size, scale=1.0):
        return (scale * torch.randn(*size, device=DEVICE, dtype=dtype)).requires_grad_()

    d = shape.d
    h, keys = param(shape.G, shape.L, d), param(shape.N, d)
    weight, bias = param(d, 2 * d, scale=(2 * d) ** -0.5), param(d)
    ln_weight, ln_bias = param(d), param(d)
    measure_op(
        benchmark, op="demultiplex", provider=provider, fn=PROVIDERS[provider],
        inputs=(h, keys, weight, bias, ln_weight, ln_bias, 1e-12), shape=shape, mode=mode,
        traffic=traffic(shape, h.element_size()), flops=flops(shape), copy_gbps=copy_gbps, budget_s=budget_s,
    )  # fmt: skip
