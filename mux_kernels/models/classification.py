"""Sequence and token classification on top of MUX-BERT (SPEC §3.1, §3.3, §4.1)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import MuxBertConfig
from .task_model import IGNORE_INDEX, MuxBertTaskModel


class DataMuxClassificationHead(nn.Module):
    """DataMUX sequence classification after the index demux: ``out_proj(GELU(dense(u)))``, no dropout.

    Stored in DataMUX checkpoints as ``demultiplexer.dense_before_out_proj`` / ``demultiplexer.out_proj``.
    """

    def __init__(self, hidden_size: int, num_labels: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(F.gelu(self.dense(x)))


class _Classifier(MuxBertTaskModel):
    """``classifier`` on dropout'd per-instance features (MUX-BERT and HF BERT); the DataMUX layout
    (``model_type = "roberta"``) has no dropout there."""

    drops_token_type_ids = True

    def __init__(self, config: MuxBertConfig):
        super().__init__(config)
        datamux = config.model_type == "roberta" and config.num_instances > 1
        self.dropout = nn.Identity() if datamux else nn.Dropout(config.hidden_dropout_prob)
        self.classifier = self._classifier(config, datamux)
        self.post_init()

    def _classifier(self, config: MuxBertConfig, datamux: bool) -> nn.Module:
        return nn.Linear(config.hidden_size, config.num_labels)


class MuxBertForSequenceClassification(_Classifier):
    """``logits (B, num_labels)``: demultiplex only the [CLS] position (N for ``index``, 0 otherwise),
    or with ``classifier_pooling = "mean"`` every position, averaged over each instance's real tokens.

    N = 1: the HF ``BertForSequenceClassification`` baseline (pooler when the config has one).
    ``num_labels = 1`` is regression (MSE), otherwise cross-entropy.
    """

    uses_pooler = True

    def _classifier(self, config: MuxBertConfig, datamux: bool) -> nn.Module:
        if datamux:
            return DataMuxClassificationHead(config.hidden_size, config.num_labels)
        return nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        retrieval_labels: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ):
        """``retrieval_labels (B, L)``: ids for the retrieval loss (default: the input ids, padding
        ignored); ``generator`` draws its random instances."""
        encoded = self.encode(input_ids, attention_mask, token_type_ids, mask_instances=True)
        if self.config.classifier_pooling == "mean":
            features = self.mean_token_features(encoded, input_ids, attention_mask)
        elif self.bert.pooler is not None:
            features = self.bert.pooler(encoded.last_hidden_state)
        else:
            cls_position = max(encoded.prefix_length - 1, 0)
            features = self.instance_features(encoded, slice(cls_position, cls_position + 1))[:, 0]
        logits = self.classifier(self.dropout(features))
        task_loss = None
        if labels is not None and self.config.task_loss_coeff > 0:
            if self.config.num_labels == 1:
                task_loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                task_loss = F.cross_entropy(logits.float(), labels)
        retrieval = self.optional_retrieval_loss(input_ids, encoded, labels, retrieval_labels, generator)
        return self.output(logits, task_loss, retrieval)

    def mean_token_features(
        self, encoded, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """``(B, d)``: each instance's demultiplexed token states averaged over its real tokens
        (``attention_mask``, else the non-padding ids)."""
        states = self.instance_features(encoded, slice(encoded.prefix_length, None))  # (B, L, d)
        real = attention_mask if attention_mask is not None else input_ids != self.config.pad_token_id
        weights = real.to(states.dtype)[..., None]
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


class MuxBertForTokenClassification(_Classifier):
    """``logits (B, L, num_labels)`` for the input positions (the ``index`` prefix is not returned)."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        retrieval_labels: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ):
        """``labels (B, L)`` with -100 where no loss is taken; the rest as in sequence classification."""
        encoded = self.encode(input_ids, attention_mask, token_type_ids)
        features = self.instance_features(encoded, slice(encoded.prefix_length, None))
        logits = self.classifier(self.dropout(features))
        task_loss = None
        if labels is not None and self.config.task_loss_coeff > 0:
            task_loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        retrieval = self.optional_retrieval_loss(input_ids, encoded, labels, retrieval_labels, generator)
        return self.output(logits, task_loss, retrieval)
