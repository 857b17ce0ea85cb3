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
        feature_targets: Optional[torch.Tensor] = None,
    ):
        """``retrieval_labels (B, L)``: ids for the retrieval loss (default: the input ids, padding
        ignored); ``generator`` draws its random instances. ``feature_targets``: a teacher's features
        for the same rows (its ``features``), pooled ``(B, d)`` or per token ``(B, L, d)``; with
        ``feature_loss_coeff > 0`` the loss adds the mean squared error of this model's against them
        (feature distillation; per token, over the real tokens)."""
        encoded = self.encode(input_ids, attention_mask, token_type_ids, mask_instances=True)
        real = self.real_tokens(input_ids, attention_mask)
        distil = feature_targets is not None and self.config.feature_loss_coeff > 0
        states = self.token_states(encoded, needed=distil and feature_targets.dim() == 3)
        features = self.pool(encoded, real, states)
        logits = self.classifier(self.dropout(features))
        task_loss = None
        if labels is not None and self.config.task_loss_coeff > 0:
            if self.config.num_labels == 1:
                task_loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                task_loss = F.cross_entropy(logits.float(), labels)
        feature_loss = self.feature_loss(features, states, real, feature_targets) if distil else None
        retrieval = self.optional_retrieval_loss(input_ids, encoded, labels, retrieval_labels, generator)
        return self.output(logits, task_loss, retrieval, feature_loss=feature_loss)

    @torch.no_grad()
    def features(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        with_token_states: bool = False,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """From one encoder pass: ``(B, d)`` the features the classifier reads (before dropout) and,
        with ``with_token_states``, ``(B, L, d)`` every row's (demultiplexed) final token states at
        its input positions (else None)."""
        encoded = self.encode(input_ids, attention_mask, token_type_ids, mask_instances=True)
        states = self.token_states(encoded, needed=with_token_states)
        return self.pool(encoded, self.real_tokens(input_ids, attention_mask), states), \
            states if with_token_states else None

    def token_states(self, encoded, needed: bool) -> Optional[torch.Tensor]:
        """``(B, L, d)`` demultiplexed token states when ``needed`` or mean pooling reads them, else None:
        the demultiplexer runs over every position at most once per forward."""
        if needed or self.config.classifier_pooling == "mean":
            return self.instance_features(encoded, slice(encoded.prefix_length, None))
        return None

    def real_tokens(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``(B, L)`` bool: the tokens that are not padding (``attention_mask``, else the non-padding ids)."""
        return attention_mask.bool() if attention_mask is not None else input_ids != self.config.pad_token_id

    def pool(self, encoded, real: torch.Tensor, states: Optional[torch.Tensor]) -> torch.Tensor:
        """``(B, d)`` per-row features: the mean of the token ``states`` (``token_states``) over the
        ``real`` tokens, the pooler's, or the demultiplexed [CLS] state."""
        if self.config.classifier_pooling == "mean":
            weights = real.to(states.dtype)[..., None]
            return (states * weights).sum(1) / weights.sum(1).clamp(min=1)
        if self.bert.pooler is not None:
            return self.bert.pooler(encoded.last_hidden_state)
        cls_position = max(encoded.prefix_length - 1, 0)
        return self.instance_features(encoded, slice(cls_position, cls_position + 1))[:, 0]

    @staticmethod
    def feature_loss(features: torch.Tensor, states: Optional[torch.Tensor], real: torch.Tensor,
                     targets: torch.Tensor) -> torch.Tensor:
        """MSE of pooled ``features (B, d)`` against ``targets (B, d)``, or of the token ``states
        (B, L, d)`` at the ``real`` tokens against ``targets (B, L, d)``."""
        mine = {2: features, 3: states}.get(targets.dim())
        if mine is None or targets.shape != mine.shape:
            (B, L), d = real.shape, features.shape[1]
            raise ValueError(f"feature_targets must have shape (B, d) = {(B, d)} or (B, L, d) = {(B, L, d)}, "
                             f"got {tuple(targets.shape)}")
        if targets.dim() == 3:
            mine, targets = mine[real], targets[real]
        return F.mse_loss(mine.float(), targets.float())


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
