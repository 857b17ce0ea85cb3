"""What distinguishes the three stages: the model class, the loss coefficients, the collator."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from ..models import (
    MuxBertForMaskedLM,
    MuxBertForSequenceClassification,
    MuxBertForTokenClassification,
    from_bert,
    from_pretrained,
)
from ..models.config import MuxBertConfig
from .objectives import ClassificationCollator, MlmCollator, PrimeCollator, TokenIds

logger = logging.getLogger(__name__)

STAGES = ("prime", "mlm", "finetune")
TASKS = {"sequence": MuxBertForSequenceClassification, "token": MuxBertForTokenClassification}


def model_class(stage: str, task: str = "sequence"):
    return TASKS[task] if stage == "finetune" else MuxBertForMaskedLM


def loss_overrides(stage: str, retrieval_coeff: float) -> dict[str, float]:
    """Priming and MLM both train through the masked-LM head on their labelled positions (task loss);
    fine-tuning adds the model's own random-instance retrieval term when ``retrieval_coeff > 0``."""
    return {"task_loss_coeff": 1.0, "retrieval_loss_coeff": retrieval_coeff if stage == "finetune" else 0.0}


def load_model(
    stage: str,
    init: Optional[str | Path] = None,
    init_bert: Optional[str | Path] = None,
    task: str = "sequence",
    num_instances: Optional[int] = None,
    **config_overrides: Any,
):
    """A stage's model from a previous stage's checkpoint (``init``) or a plain BERT one (``init_bert``).

    Heads a checkpoint lacks (the classifier after priming, say) start fresh and are logged. With
    ``init``, a ``num_instances`` other than the checkpoint's is a curriculum step over N: everything
    is loaded except the N-shaped tensors (the instance embeddings and keys), which start fresh.
    """
    cls = model_class(stage, task)
    if (init is None) == (init_bert is None):
        raise ValueError("give exactly one of init (a MUX-BERT checkpoint) and init_bert (a plain BERT checkpoint)")
    if init_bert is not None:
        return from_bert(init_bert, model_class=cls, num_instances=num_instances or 1, **config_overrides)
    if num_instances is not None:
        config_overrides["num_instances"] = num_instances
    model, info = from_pretrained(init, model_class=cls, strict=False, output_loading_info=True, **config_overrides)
    if info.missing_keys:  # mismatched shapes are listed here too
        logger.info("%s: starting fresh %s", init, info.missing_keys)
    return model


def collator(stage: str, config: MuxBertConfig, ids: TokenIds, mask_probability: Optional[float] = None):
    if stage == "prime":
        return PrimeCollator(config.num_instances, ids, 0.0 if mask_probability is None else mask_probability)
    if stage == "mlm":
        return MlmCollator(ids, 0.15 if mask_probability is None else mask_probability)
    return ClassificationCollator(ids)
