"""What the task models return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class MuxBertOutput:
    """``logits`` per un-multiplexed row, in input order.

    ``loss = task_loss_coeff * task_loss + retrieval_loss_coeff * retrieval_loss
    + feature_loss_coeff * feature_loss`` over the terms
    that were computed (a term is skipped when its coefficient is 0 or its labels are missing).
    ``logits_positions`` is set when ``logits`` are sparse (masked LM with labels): row r of
    ``logits`` belongs to ``(batch row, position) = logits_positions[r]``.
    """

    logits: Optional[torch.Tensor]
    loss: Optional[torch.Tensor] = None
    task_loss: Optional[torch.Tensor] = None
    retrieval_loss: Optional[torch.Tensor] = None
    logits_positions: Optional[torch.Tensor] = None
    feature_loss: Optional[torch.Tensor] = None
