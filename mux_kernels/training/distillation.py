"""Knowledge distillation for sequence classification from a trained teacher (typically N = 1).

Two signals, both computed once before training for every training row and stored with the split:

* soft targets (Hinton et al., 2015, at temperature 1): ``(1 - weight) · one_hot(label) + weight ·
  p_teacher``. Cross-entropy against them is ``(1 - weight) · CE(label) + weight · KL(p_teacher ‖
  p_student)`` up to a constant, so no loss code changes: they replace the split's ``labels`` (float,
  ``(M, C)``), which ``F.cross_entropy`` takes as class probabilities. With ``weight < 0.5`` their
  argmax is still the gold label, which is what training accuracy is scored against.
* feature targets: the teacher's pooled ``features`` ``(M, d)`` (the state its classifier reads),
  or its final token states ``(M, L, d)`` (kept in fp16: 0.5 GB for 10k rows of 64 tokens at
  d = 384), stored as ``feature_targets``; the student adds ``feature_loss_coeff · MSE`` against
  them. A multiplexed student learns from them what each of its N instances should look like on
  its own, d (or L·d) numbers per row instead of one label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .objectives import trim_padding


@torch.no_grad()
def teacher_outputs(teacher: torch.nn.Module, input_ids: torch.Tensor, pad_id: int, batch_size: int = 64,
                    token_states: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities (M, C), features)`` of ``teacher`` (a sequence classifier, run in eval mode)
    for every row of ``input_ids (M, L)``: its class probabilities, and its pooled features ``(M, d)``
    or, with ``token_states``, its final token states ``(M, L, d)`` in fp16 (zero past each batch's
    longest row)."""
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    try:
        probabilities, features = [], []
        for start in range(0, len(input_ids), batch_size):
            rows = input_ids[start : start + batch_size]
            rows = rows[:, : trim_padding(rows, pad_id)].to(device)
            pooled, states = teacher.features(rows, (rows != pad_id).long(), with_token_states=token_states)
            probabilities.append(teacher.classifier(pooled).float().softmax(dim=-1).cpu())
            if token_states:
                features.append(F.pad(states.half().cpu(), (0, 0, 0, input_ids.shape[1] - rows.shape[1])))
            else:
                features.append(pooled.float().cpu())
        return torch.cat(probabilities), torch.cat(features)
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
