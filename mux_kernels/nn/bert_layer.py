"""One BERT (= ELECTRA) transformer layer with Hugging Face parameter names.

Used by the MUX-BERT encoder and by the contextual multiplexer (SPEC §2.4, whose two extra layers
are ``ElectraLayer``s with the same layout). Attention runs through ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}

# transformers 4.4.2 (what the released checkpoints were trained with) masks with an additive
# -10000, not -inf: a row whose keys are all masked then attends uniformly instead of giving NaN.
MASKED_SCORE = -10000.0


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The Hugging Face ``hidden_act`` names this package supports."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"hidden_act {name!r} is not supported; choose one of {sorted(_ACTIVATIONS)}") from None


def additive_attention_mask(attention_mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """``(B, L)`` 1 = attend / 0 = padding, to the ``(B, 1, 1, L)`` additive mask SDPA takes."""
    if attention_mask is None:
        return None
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * MASKED_SCORE


class BertSelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_attention_heads ({num_heads})")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dropout_p = dropout

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, L, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, L, self.num_heads, d // self.num_heads).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        if mask is not None:
            mask = mask.to(q.dtype)
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        return context.transpose(1, 2).reshape(B, L, d)


class BertSelfOutput(nn.Module):
    """Projection, dropout, residual and LayerNorm; also the FFN output block (``BertOutput``)."""

    def __init__(self, in_features: int, hidden_size: int, dropout: float, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, hidden_dropout: float, attention_dropout: float, eps: float):
        super().__init__()
        self.self = BertSelfAttention(hidden_size, num_heads, attention_dropout)
        self.output = BertSelfOutput(hidden_size, hidden_size, hidden_dropout, eps)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)
        self.act = activation(hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    """Self-attention block then FFN block, each with residual + post-LayerNorm (HF ``BertLayer``)."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        intermediate_size: int,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
    ):
        super().__init__()
        self.attention = BertAttention(
            hidden_size, num_attention_heads, hidden_dropout_prob, attention_probs_dropout_prob, layer_norm_eps
        )
        self.intermediate = BertIntermediate(hidden_size, intermediate_size, hidden_act)
        self.output = BertSelfOutput(intermediate_size, hidden_size, hidden_dropout_prob, layer_norm_eps)

    @classmethod
    def from_config(cls, config) -> "BertLayer":
        """Build from any object with the Hugging Face BERT config attributes."""
        return cls(
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            config.hidden_act,
            config.hidden_dropout_prob,
            config.attention_probs_dropout_prob,
            config.layer_norm_eps,
        )

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x (B, L, d)``; ``mask`` the additive ``(B, 1, 1, L)`` mask of ``additive_attention_mask`` or None."""
        attended = self.attention(x, mask)
        return self.output(self.intermediate(attended), attended)
