"""mux.multiplex_embeddings: token ids (G, N, L) to the multiplexed encoder input (G, L, d) (SPEC §2.1):
embed every instance (word + position + type 0, LayerNorm), mix with the Hadamard vectors, then the
second embedding pass (+ position + type 0, LayerNorm). BERT tables: V=30522, 512 positions, 2 types.
Token types are None (type 0), as MUX-BERT's classification forwards pass them.

Unavoidable traffic. Forward: the ids, one word row per token (G·N·L·d), the position rows, the type-0
row, the LayerNorm and mixing vectors; writes out. Backward: grad_out, and the forward's reads again
(the per-instance LayerNorm is recomputed, not stored); writes the gradients of every table, and the
word table's gradient is dense (V·d), as the reference's is. No GEMM.
"""

import pytest
import torch

from harness import DEVICE, MODES, compiled, measure_op
from mux_kernels import reference

VOCAB, POSITIONS, TYPES = 30522, 512, 2

PROVIDERS = {
    "mux_kernels": torch.ops.mux.multiplex_embeddings,
    "eager": reference.multiplex_embeddings,
    "compiled": compiled(reference.multiplex_embeddings),
}


def traffic(shape, itemsize):
    G, N, L, d = shape.G, shape.N, shape.L, shape.d
    ids = 8 * G * N * L  # int64
    reads = itemsize * (G * N * L * d + L * d + d + 2 * d + N * d)  # word rows, positions, type 0, LN, v
    grads = itemsize * (VOCAB * d + POSITIONS * d + TYPES * d + 2 * d + N * d)
    out = itemsize * G * L * d
    return ids + reads + out, out + ids + reads + grads


@pytest.mark.benchmark(group="multiplex_embeddings")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_multiplex_embeddings(benchmark, budget_s, copy_gbps, shape, dtype, provider, mode):
    def param(*size):
        return torch.randn(*size, device=DEVICE, dtype=dtype, requires_grad=True)

    ids = torch.randint(0, VOCAB, (shape.G, shape.N, shape.L), device=DEVICE)
    word, pos, type_ = param(VOCAB, shape.d), param(POSITIONS, shape.d), param(TYPES, shape.d)
    ln_weight, ln_bias, v = param(shape.d), param(shape.d), param(shape.N, shape.d)
    inputs = (ids, None, word, pos, type_, ln_weight, ln_bias, v, 1.0 / shape.N, 1e-12)
    measure_op(
        benchmark, op="multiplex_embeddings", provider=provider, fn=PROVIDERS[provider], inputs=inputs,
        shape=shape, mode=mode, traffic=traffic(shape, word.element_size()), copy_gbps=copy_gbps, budget_s=budget_s,
    )  # fmt: skip
