"""Wrap any Hugging Face-style encoder that takes ``inputs_embeds`` into a multiplexed one."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .grouping import multiplexed_attention_mask, pad_rows, rows_to_pad


class MultiplexedEncoder(nn.Module):
    """``(B, L, d)`` embeddings -> multiplexer -> ``encoder(inputs_embeds=...)`` -> demultiplexer -> ``(B, P, e)``.

    ``encoder`` is anything called as ``encoder(inputs_embeds=x, attention_mask=m)`` that returns the
    last hidden state, alone or first in a tuple / ``ModelOutput`` (e.g. ``transformers.BertModel``,
    which runs its embedding block again on the mix, exactly as the reference does, SPEC §2.1).
    ``demultiplexer(h)`` maps ``(G, L, d)`` to ``(G, N, P, e)``. With an ``IndexPrefixDemultiplexer``
    the caller embeds ids that already carry the prefix (``add_prefix``).

    A batch that is not a multiple of N is padded with copies of its last row, whose outputs are
    dropped. The encoder gets no attention mask (as in the reference) unless ``padding_aware``.
    """

    def __init__(
        self, encoder: nn.Module, multiplexer: nn.Module, demultiplexer: nn.Module, padding_aware: bool = False
    ):
        super().__init__()
        self.encoder = encoder
        self.multiplexer = multiplexer
        self.demultiplexer = demultiplexer
        self.padding_aware = padding_aware

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        num_instances = self.multiplexer.num_instances
        batch_size = inputs_embeds.shape[0]
        extra = rows_to_pad(batch_size, num_instances)
        embeds, mask = pad_rows(inputs_embeds, extra), pad_rows(attention_mask, extra)
        muxed = self.multiplexer(embeds, mask)
        encoder_mask = None
        if self.padding_aware and mask is not None:
            encoder_mask = multiplexed_attention_mask(mask, num_instances)
        out = self.encoder(inputs_embeds=muxed, attention_mask=encoder_mask)
        hidden = out if isinstance(out, torch.Tensor) else out[0]
        return self.demultiplexer(hidden).flatten(0, 1)[:batch_size]
