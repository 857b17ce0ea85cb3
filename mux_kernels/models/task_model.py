"""The parts every MUX-BERT task model shares: demultiplexer, retrieval head, loss bookkeeping."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .components import build_demultiplexer, build_retrieval_head
from .config import MuxBertConfig
from .mux_bert import MuxBertModel, MuxEncoderOutput
from .outputs import MuxBertOutput

IGNORE_INDEX = -100


class MuxBertTaskModel(MuxBertModel):
    """Adds ``demultiplexer`` (task path) and ``retrieval_head`` when ``num_instances > 1``."""

    has_task_demultiplexer = True
    ignored_checkpoint_prefixes: tuple[str, ...] = ()

    def __init__(self, config: MuxBertConfig):
        super().__init__(config)
        multiplexed = config.num_instances > 1
        self.demultiplexer = build_demultiplexer(config) if multiplexed and self.has_task_demultiplexer else None
        self.retrieval_head = build_retrieval_head(config, self.demultiplexer) if multiplexed else None

    def tie_weights(self) -> None:
        if self.retrieval_head is not None and self.config.tie_word_embeddings:
            self.retrieval_head.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def instance_features(self, encoded: MuxEncoderOutput, positions: slice) -> torch.Tensor:
        """Per-instance states at ``positions`` of the encoder output: ``(B, P, d)``, input order."""
        h = encoded.last_hidden_state
        if self.demultiplexer is None:
            return h[:, positions]
        return self.demultiplexer(h, positions).flatten(0, 1)[: encoded.batch_size]

    # --- retrieval objective (SPEC §4.3) ------------------------------------------------------

    def retrieval_targets(
        self, input_ids: torch.Tensor, retrieval_labels: Optional[torch.Tensor], num_rows: int
    ) -> torch.Tensor:
        """``(G*N, L)`` token ids to retrieve: ``retrieval_labels`` if given, else the input ids with
        padding ignored; ragged-batch padding rows are ignored."""
        if retrieval_labels is None:
            retrieval_labels = input_ids.masked_fill(input_ids == self.config.pad_token_id, IGNORE_INDEX)
        extra = num_rows - retrieval_labels.shape[0]
        return F.pad(retrieval_labels, (0, 0, 0, extra), value=IGNORE_INDEX)

    def retrieval_loss(
        self, encoded: MuxEncoderOutput, targets: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Mean CE of the retrieval head on one random instance per (group, position).

        ``targets (G*N, L)`` (``retrieval_targets``). Each position draws ``r ~ U{0..N-1}``; non-ignored
        targets are kept with probability ``retrieval_percentage``. Only the kept rows reach the head.
        """
        h = encoded.last_hidden_state
        G, N, L = h.shape[0], self.config.num_instances, targets.shape[1]
        instances = torch.randint(N, (G, L), generator=generator, device=h.device)
        picked = targets.view(G, N, L).gather(1, instances[:, None]).squeeze(1)
        if self.config.retrieval_percentage < 1.0:
            dropped = torch.rand(G, L, generator=generator, device=h.device) >= self.config.retrieval_percentage
            picked = picked.masked_fill(dropped, IGNORE_INDEX)
        groups, positions = (picked != IGNORE_INDEX).nonzero(as_tuple=True)
        if groups.numel() == 0:
            return h.sum() * 0.0  # keeps the graph, so a training step can always call backward
        logits = self.retrieval_head.select(h, groups, instances[groups, positions], positions + encoded.prefix_length)
        return F.cross_entropy(logits.float(), picked[groups, positions])

    def optional_retrieval_loss(
        self,
        input_ids: torch.Tensor,
        encoded: MuxEncoderOutput,
        labels: Optional[torch.Tensor],
        retrieval_labels: Optional[torch.Tensor],
        generator: Optional[torch.Generator],
    ) -> Optional[torch.Tensor]:
        """The retrieval loss when it counts: the reference computes it whenever labels are given,
        even with ``retrieval_loss_coeff = 0``; here the head is skipped entirely then."""
        if self.retrieval_head is None or self.config.retrieval_loss_coeff <= 0:
            return None
        if labels is None and retrieval_labels is None:
            return None
        num_rows = encoded.last_hidden_state.shape[0] * self.config.num_instances
        return self.retrieval_loss(encoded, self.retrieval_targets(input_ids, retrieval_labels, num_rows), generator)

    def output(
        self,
        logits: Optional[torch.Tensor],
        task_loss: Optional[torch.Tensor] = None,
        retrieval_loss: Optional[torch.Tensor] = None,
        logits_positions: Optional[torch.Tensor] = None,
        feature_loss: Optional[torch.Tensor] = None,
    ) -> MuxBertOutput:
        terms = [(self.config.task_loss_coeff, task_loss), (self.config.retrieval_loss_coeff, retrieval_loss),
                 (self.config.feature_loss_coeff, feature_loss)]
        present = [coeff * loss for coeff, loss in terms if loss is not None]
        loss = sum(present[1:], present[0]) if present else None
        return MuxBertOutput(logits, loss, task_loss, retrieval_loss, logits_positions, feature_loss)
