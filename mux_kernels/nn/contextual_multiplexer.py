"""``gaussian_attention_v2``: the contextual multiplexer of MUX-PLMs (SPEC §2.4)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import ops
from .bert_layer import BertLayer, additive_attention_mask
from .grouping import as_groups
from .mixing_vectors import gaussian_vectors


class ContextualMultiplexer(nn.Module):
    """Contextualise each instance, Hadamard with Gaussian keys, attend across instances, average.

    1. ``A1 = muxing_attention(E, padding mask of each instance) + E``       (along the sequence)
    2. ``Gt_i = v_i * A1_i``
    3. ``A2 = muxing_attention_2(Gt at each (g, t) as a length-N sequence)``  (across instances)
    4. ``M = mean_i (A2_i + Gt_i)``
    The two layers are full BERT layers (``ElectraLayer`` in the reference, same parameters).
    """

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        num_attention_heads: int,
        intermediate_size: int,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
        norm: float = 1.0,
        learnable: bool = False,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        self.num_instances = num_instances
        self.instance_embedding = nn.Parameter(
            gaussian_vectors(num_instances, hidden_size, norm, generator), requires_grad=learnable
        )
        layer_args = (hidden_size, num_attention_heads, intermediate_size, hidden_act, hidden_dropout_prob,
                      attention_probs_dropout_prob, layer_norm_eps)
        self.muxing_attention = BertLayer(*layer_args)
        self.muxing_attention_2 = BertLayer(*layer_args)

    @classmethod
    def from_config(cls, config, generator: Optional[torch.Generator] = None) -> "ContextualMultiplexer":
        """From an object with the BERT config attributes plus ``num_instances``,
        ``gaussian_hadamard_norm`` and ``learn_muxing``."""
        return cls(
            config.num_instances,
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            config.hidden_act,
            config.hidden_dropout_prob,
            config.attention_probs_dropout_prob,
            config.layer_norm_eps,
            config.gaussian_hadamard_norm,
            bool(config.learn_muxing),
            generator,
        )

    def forward(
        self, x: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, mask_instances: bool = False
    ) -> torch.Tensor:
        """``x (G, N, L, d)`` or ``(B, L, d)``; ``attention_mask (B, L)`` (1 = token, 0 = padding) masks
        step 1; with ``mask_instances`` it also hides padded instances from step 3 (the reference does
        that in sequence classification only). Returns ``(G, L, d)``."""
        groups = as_groups(x, self.num_instances)
        G, N, L, d = groups.shape
        flat = groups.reshape(G * N, L, d)
        contextual = self.muxing_attention(flat, additive_attention_mask(attention_mask, flat.dtype)) + flat
        contextual = contextual.view(G, N, L, d)
        vectors = self.instance_embedding.to(contextual.dtype)
        tagged = (contextual * vectors[None, :, None]).permute(0, 2, 1, 3).reshape(G * L, N, d)
        instance_mask = None
        if mask_instances and attention_mask is not None:
            instance_mask = attention_mask.view(G, N, L).transpose(1, 2).reshape(G * L, N)
        across = self.muxing_attention_2(tagged, additive_attention_mask(instance_mask, tagged.dtype))
        # mean_i(A2_i + Gt_i): the Gt half is exactly the Hadamard mix of A1, one fused op.
        tagged_mean = ops.multiplex(contextual, vectors, 1.0 / N)
        return across.view(G, L, N, d).mean(dim=2).to(tagged_mean.dtype) + tagged_mean
