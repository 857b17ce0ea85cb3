"""Batch construction for the three stages (SPEC §4.3) and the accuracy that goes with each.

Every collator takes a dict of row tensors (``input_ids (B, L)``, optional ``labels``) and a
``torch.Generator`` and returns the model's keyword arguments. ``B`` is a multiple of N and rows are
grouped consecutively (row ``g*N + i`` is instance i of group g), as in ``mux_kernels.nn.grouping``.
All labels use -100 for "no loss here"; the masked-LM model then runs its retrieval head only on
the labelled (row, position) pairs, so the priming and MLM losses share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..models.task_model import IGNORE_INDEX


def trim_padding(input_ids: torch.Tensor, pad_id: int) -> int:
    """The batch's longest row: columns past it are padding everywhere and are dropped."""
    lengths = (input_ids != pad_id).sum(dim=1)
    return max(int(lengths.max()), 1)


def special_mask(input_ids: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    return torch.isin(input_ids, torch.tensor(list(special_ids), device=input_ids.device))


def mask_tokens(
    input_ids: torch.Tensor,
    probability: float,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: ``probability`` of the non-special tokens are chosen; of those 80 % become
    ``mask_id``, 10 % a random token, 10 % stay. Returns the corrupted ids and the labels
    (the original id where chosen, else -100)."""
    def draw() -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator)

    chosen = (draw() < probability) & ~special_mask(input_ids, special_ids)
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    to_mask = chosen & (draw() < 0.8)
    to_random = chosen & ~to_mask & (draw() < 0.5)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    corrupted = input_ids.masked_fill(to_mask, mask_id)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return corrupted, labels


def retrieval_labels(targets: torch.Tensor, num_instances: int, ignore: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """Token retrieval: for every group and position, one instance ``r ~ U{0..N-1}`` keeps its target
    token as the label; the other instances, and positions where ``ignore`` is set, get -100."""
    B, L = targets.shape
    G, N = B // num_instances, num_instances
    chosen = torch.randint(N, (G, 1, L), generator=generator) == torch.arange(N).view(1, N, 1)
    keep = chosen.reshape(B, L) & ~ignore
    return targets.masked_fill(~keep, IGNORE_INDEX)


@dataclass
class TokenIds:
    pad_id: int
    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]  # never masked and never a retrieval target ([PAD], [CLS], [SEP], ...)


@dataclass
class PrimeCollator:
    """Stage 1, token retrieval. With ``mask_probability > 0`` the input is BERT-masked first and the
    targets are the masked input (what the reference's priming does); the default retrieves clean text."""

    num_instances: int
    ids: TokenIds
    mask_probability: float = 0.0

    def __call__(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        input_ids = batch["input_ids"][:, : trim_padding(batch["input_ids"], self.ids.pad_id)]
        if self.mask_probability > 0:
            input_ids, _ = mask_tokens(input_ids, self.mask_probability, self.ids.mask_id, self.ids.vocab_size,
                                       self.ids.special_ids, generator)
        ignore = special_mask(batch["input_ids"][:, : input_ids.shape[1]], self.ids.special_ids)
        labels = retrieval_labels(input_ids, self.num_instances, ignore, generator)
        return {"input_ids": input_ids, "attention_mask": (input_ids != self.ids.pad_id).long(), "labels": labels}


@dataclass
class MlmCollator:
    """Stage 2, MLM: BERT masking; every instance is scored at its masked positions."""

    ids: TokenIds
    mask_probability: float = 0.15

    def __call__(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        input_ids = batch["input_ids"][:, : trim_padding(batch["input_ids"], self.ids.pad_id)]
        input_ids, labels = mask_tokens(input_ids, self.mask_probability, self.ids.mask_id, self.ids.vocab_size,
                                        self.ids.special_ids, generator)
        return {"input_ids": input_ids, "attention_mask": (input_ids != self.ids.pad_id).long(), "labels": labels}


@dataclass
class ClassificationCollator:
    """Stage 3: sequence labels ``(B,)`` or token labels ``(B, L)`` (-100 where no loss), as stored;
    a teacher's ``feature_targets``, ``(B, d)`` or ``(B, L, d)``, come along when the split has them
    (distillation)."""

    ids: TokenIds

    def __call__(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        length = trim_padding(batch["input_ids"], self.ids.pad_id)
        input_ids, labels = batch["input_ids"][:, :length], batch["labels"]
        if labels.dim() == 2:
            labels = labels[:, :length]
        collated = {"input_ids": input_ids, "attention_mask": (input_ids != self.ids.pad_id).long(), "labels": labels}
        if "feature_targets" in batch:
            targets = batch["feature_targets"]
            collated["feature_targets"] = targets[:, :length] if targets.dim() == 3 else targets
        return collated


def accuracy_counts(output, labels: torch.Tensor) -> tuple[int, int]:
    """(correct, scored) predictions of a task-model output against the labels it was given.

    Sparse masked-LM logits come with ``logits_positions``; dense classification logits line up
    with ``labels`` (positions labelled -100 are not scored).
    """
    if output.logits is None:
        return 0, 0
    if labels.is_floating_point():  # class probabilities (distillation targets): scored against their argmax
        labels = labels.argmax(dim=-1)
    predictions = output.logits.argmax(dim=-1)
    if output.logits_positions is not None:
        targets = labels[output.logits_positions[:, 0], output.logits_positions[:, 1]]
    else:
        targets = labels
    scored = targets != IGNORE_INDEX
    return int((predictions[scored] == targets[scored]).sum()), int(scored.sum())
