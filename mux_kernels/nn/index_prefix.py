"""The index-token prefix of DataMUX / MUX-BERT ``index`` demultiplexing (SPEC §3.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class IndexPrefix:
    """Prefix of N+1 ids put in front of every instance, tagging instance i by slot i.

    Slots ``0..N-1`` hold ``fill_id`` except slot i, which holds ``first_instance_id - i``; slot N
    holds ``cls_id`` (a shared [CLS]). BERT ids: 680 / 678 - i / 101; RoBERTa: 50000 / V-2-i / 49923.
    """

    num_instances: int
    fill_id: int = 680
    first_instance_id: int = 678
    cls_id: int = 101

    @property
    def length(self) -> int:
        return self.num_instances + 1

    def ids(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """``(N, N+1)``: row i is instance i's prefix."""
        N = self.num_instances
        table = torch.full((N, N + 1), self.fill_id, dtype=torch.long, device=device)
        table[:, N] = self.cls_id
        instances = torch.arange(N, device=device)
        table[instances, instances] = self.first_instance_id - instances
        return table

    def apply(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Prepend the prefix of instance ``row % N`` to every row of ``(B, L)`` ids: ``(B, L + N + 1)``.

        The prefix is attended (mask 1) and has token type 0. B must be a multiple of N.
        """
        B = input_ids.shape[0]
        if B % self.num_instances:
            raise ValueError(f"the batch ({B} rows) must be a multiple of num_instances ({self.num_instances})")
        prefix = self.ids(input_ids.device).repeat(B // self.num_instances, 1).to(input_ids.dtype)
        ids = torch.cat([prefix, input_ids], dim=1)
        if attention_mask is not None:
            attention_mask = torch.cat([torch.ones_like(prefix, dtype=attention_mask.dtype), attention_mask], dim=1)
        if token_type_ids is not None:
            token_type_ids = torch.cat([torch.zeros_like(prefix, dtype=token_type_ids.dtype), token_type_ids], dim=1)
        return ids, attention_mask, token_type_ids
