"""Tiny MUX-BERT configs, random weights and batches shared by test_models.py and test_nn.py."""

from __future__ import annotations

import torch

from mux_kernels.models import MuxBertConfig
from mux_kernels.models.loading import canonical_name

VOCAB = 100
PAD, CLS = 0, 1


def tiny_config(**overrides) -> MuxBertConfig:
    values = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=3, pad_token_id=PAD, cls_token_id=CLS,
        index_prefix_fill_id=50, index_prefix_first_instance_id=48, index_prefix_cls_id=CLS,
    )
    values.update(overrides)
    return MuxBertConfig(**values)


def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Random non-trivial values everywhere (LayerNorm weights != 1, biases != 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module


def released_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's tensors under their released (canonical) names, each once (no tied decoder)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out.setdefault(canonical_name(key, model.config), tensor.detach().clone())
    return out


def random_batch(batch_size: int, length: int, seed: int = 0, low: int = 2, high: int = 40):
    """ids with [CLS] first and a padded tail per row, the matching mask, and random token types."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, high, (batch_size, length), generator=g)
    ids[:, 0] = CLS
    lengths = torch.randint(length // 2, length + 1, (batch_size,), generator=g)
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, PAD)
    types = torch.randint(0, 2, (batch_size, length), generator=g)
    return ids, mask, types
