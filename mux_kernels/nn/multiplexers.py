"""Non-contextual multiplexers (SPEC §2.2, §2.3): ``(G, N, L, d)`` or ``(B, L, d)`` to ``(G, L, d)``.

Each holds its fixed per-instance tensor as ``instance_embedding`` (the released parameter name)
and mixes through ``mux_kernels.ops.multiplex``. The Hadamard ones can also be fused with the
embedding block (``ops.multiplex_embeddings``); MUX-BERT does that.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import ops
from .grouping import as_groups
from .mixing_vectors import binary_chunk_masks, gaussian_vectors, low_rank_orthogonal_matrices, orthogonal_matrices


class Multiplexer(nn.Module):
    """``out = scale * sum_i phi_i(x_i)`` with ``phi_i`` a Hadamard vector ``(N, d)`` or a matrix ``(N, d, d)``."""

    def __init__(self, instance_embedding: torch.Tensor, scale: float, learnable: bool = False):
        super().__init__()
        self.num_instances = instance_embedding.shape[0]
        self.instance_embedding = nn.Parameter(instance_embedding, requires_grad=learnable)
        self.scale = scale

    def forward(
        self, x: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, mask_instances: bool = False
    ) -> torch.Tensor:
        """Mix the N instances of every group. The masks are accepted for an interface shared with
        ``ContextualMultiplexer``; a non-contextual mix does not depend on them."""
        x = as_groups(x, self.num_instances)
        return ops.multiplex(x, self.instance_embedding.to(x.dtype), self.scale)


class HadamardMultiplexer(Multiplexer):
    """Vectors ``v_i (N, d)`` and the mean: ``out = (1/N) sum_i v_i * x_i``."""

    def __init__(self, vectors: torch.Tensor, learnable: bool = False):
        super().__init__(vectors, ops.default_scale(vectors.shape[0], matrix=False), learnable)


class GaussianMultiplexer(HadamardMultiplexer):
    """``gaussian_hadamard``: Gaussian vectors of L2 norm ``norm`` (``gaussian_hadamard_norm``)."""

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        norm: float = 1.0,
        learnable: bool = False,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__(gaussian_vectors(num_instances, hidden_size, norm, generator), learnable)


class BinaryHadamardMultiplexer(HadamardMultiplexer):
    """``binary_hadamard``: 0/1 masks over contiguous coordinate chunks (``binary_hadamard_epsilon`` overlap)."""

    def __init__(self, num_instances: int, hidden_size: int, epsilon: float = 0.0, learnable: bool = False):
        super().__init__(binary_chunk_masks(num_instances, hidden_size, epsilon), learnable)


class OrthogonalMultiplexer(Multiplexer):
    """``random_ortho`` (Haar orthogonal ``W_i``) or ``random_ortho_low_rank``; ``out = (1/sqrt N) sum_i x_i @ W_i``."""

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        low_rank: bool = False,
        learnable: bool = False,
        generator: Optional[torch.Generator] = None,
    ):
        draw = low_rank_orthogonal_matrices if low_rank else orthogonal_matrices
        super().__init__(
            draw(num_instances, hidden_size, generator), ops.default_scale(num_instances, matrix=True), learnable
        )
