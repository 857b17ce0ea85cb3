"""Knowledge distillation for sequence classification (Hinton et al., 2015, at temperature 1).

A multiplexed student learns from soft targets: ``(1 - weight) · one_hot(label) + weight · p_teacher``,
where ``p_teacher`` are the class probabilities of a trained model (typically the same encoder at
N = 1) on the same snippet. Cross-entropy against these targets is the usual
``(1 - weight) · CE(label) + weight · KL(p_teacher ‖ p_student)`` up to a constant, so no loss code
changes: the targets are computed once, before training, and stored as the split's ``labels``
(float, ``(M, C)``), which ``F.cross_entropy`` takes as class probabilities. With ``weight < 0.5``
their argmax is still the gold label, which is what training accuracy is scored against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .objectives import trim_padding


@torch.no_grad()
def teacher_probabilities(teacher: torch.nn.Module, input_ids: torch.Tensor, pad_id: int,
                          batch_size: int = 64) -> torch.Tensor:
    """``(M, C)`` softmax of ``teacher``'s logits for every row of ``input_ids (M, L)``, in eval mode."""
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    try:
        chunks = []
        for start in range(0, len(input_ids), batch_size):
            rows = input_ids[start : start + batch_size]
            rows = rows[:, : trim_padding(rows, pad_id)].to(device)
            logits = teacher(input_ids=rows, attention_mask=(rows != pad_id).long()).logits
            chunks.append(logits.float().softmax(dim=-1).cpu())
        return torch.cat(chunks)
    finally:
        teacher.train(was_training)


def soft_targets(labels: torch.Tensor, probabilities: torch.Tensor, weight: float) -> torch.Tensor:
    """``(1 - weight) · one_hot(labels) + weight · probabilities``; ``labels (M,)``, ``probabilities (M, C)``."""
    if not 0 <= weight < 0.5:
        raise ValueError(f"distillation weight must be in [0, 0.5) so the gold label stays the argmax, got {weight}")
    if probabilities.dim() != 2 or probabilities.shape[0] != labels.shape[0]:
        raise ValueError(f"probabilities must have shape (M, C) with M = len(labels) = {labels.shape[0]}, "
                         f"got {tuple(probabilities.shape)}")
    gold = F.one_hot(labels, probabilities.shape[1]).to(probabilities.dtype)
    return (1 - weight) * gold + weight * probabilities
