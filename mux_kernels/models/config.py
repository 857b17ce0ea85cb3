"""``MuxBertConfig``: the reference's config keys (SPEC §5.2), plus the few options this package adds."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

logger = logging.getLogger(__name__)

MUXING_VARIANTS = (
    "gaussian_hadamard", "binary_hadamard", "random_ortho", "random_ortho_low_rank", "gaussian_attention_v2"
)
DEMUXING_VARIANTS = ("index_pos", "index")
MODEL_TYPES = ("bert", "roberta")
CLASSIFIER_POOLINGS = ("cls", "mean")

# Per-family token ids (SPEC §3.1, §3.3): [CLS] forced at position 0 for index_pos, and the
# index prefix (fill, instance-0 id, shared [CLS]); the RoBERTa instance-0 id is V - 2.
_BERT_IDS = {"cls_token_id": 101, "index_prefix_fill_id": 680, "index_prefix_first_instance_id": 678,
             "index_prefix_cls_id": 101}
_ROBERTA_IDS = {"cls_token_id": 0, "index_prefix_fill_id": 50000, "index_prefix_cls_id": 49923}


@dataclass
class MuxBertConfig:
    # Hugging Face BERT keys.
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    num_labels: int = 2
    # "bert" (MUX-BERT) or "roberta" (DataMUX: RoBERTa position ids, DataMUX heads, untied retrieval decoder).
    model_type: str = "bert"
    architectures: Optional[list[str]] = None

    # Reference MUX keys. num_instances = 1 is a plain BERT (no multiplexer, no demultiplexer).
    num_instances: int = 1
    muxing_variant: str = "gaussian_hadamard"
    demuxing_variant: str = "index_pos"
    num_hidden_demux_layers: int = 3
    gaussian_hadamard_norm: float = 1.0
    binary_hadamard_epsilon: float = 0.0
    learn_muxing: int = 0
    retrieval_loss_coeff: float = 0.0
    task_loss_coeff: float = 1.0
    retrieval_percentage: float = 1.0
    legacy_demuxing: bool = False
    use_hierarchical_softmax: bool = False

    # This package's options (None: derived from model_type / num_instances in __post_init__).
    feature_loss_coeff: float = 0.0  # sequence classification: weight of the feature-distillation MSE
    padding_aware: bool = False  # give the encoder the multiplexed padding mask (the reference does not)
    # Sequence-classification features: "cls", the reference (the demultiplexed [CLS] state, or the
    # pooler at N = 1); "mean", the mean of the demultiplexed token states over the real tokens (the
    # sentence-embedding pooling MiniLM-style checkpoints were trained with; costs a demux at every
    # position, as token classification does).
    classifier_pooling: str = "cls"
    use_token_type_ids: bool = False  # the reference's multiplexed classification forward drops them
    exact_embedding_dropout: bool = False  # training: reference dropout placement instead of the fused op
    # N = 1 sequence classification only (default: N == 1); the multiplexed models never have one.
    add_pooling_layer: Optional[bool] = None
    tie_word_embeddings: Optional[bool] = None  # default: tied for BERT, untied for DataMUX
    cls_token_id: Optional[int] = None
    index_prefix_fill_id: Optional[int] = None
    index_prefix_first_instance_id: Optional[int] = None
    index_prefix_cls_id: Optional[int] = None

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.num_instances < 1:
            raise ValueError(f"num_instances must be >= 1, got {self.num_instances}")
        if self.muxing_variant not in MUXING_VARIANTS:
            raise ValueError(f"muxing_variant must be one of {MUXING_VARIANTS}, got {self.muxing_variant!r}")
        if self.demuxing_variant == "mlp":
            raise NotImplementedError(
                "demuxing_variant 'mlp' is not a MUX-BERT option (the reference raises too); the DataMUX MLP "
                "demultiplexer is available as mux_kernels.nn.MLPDemultiplexer"
            )
        if self.demuxing_variant not in DEMUXING_VARIANTS:
            raise ValueError(f"demuxing_variant must be one of {DEMUXING_VARIANTS}, got {self.demuxing_variant!r}")
        if self.legacy_demuxing or self.use_hierarchical_softmax:
            raise NotImplementedError(
                "legacy_demuxing and use_hierarchical_softmax (PruMUX options) are not supported; "
                "every released checkpoint has both false"
            )
        if self.classifier_pooling not in CLASSIFIER_POOLINGS:
            raise ValueError(
                f"classifier_pooling must be one of {CLASSIFIER_POOLINGS}, got {self.classifier_pooling!r}")
        if self.add_pooling_layer is None:
            self.add_pooling_layer = self.num_instances == 1 and self.classifier_pooling == "cls"
        if self.tie_word_embeddings is None:
            self.tie_word_embeddings = self.model_type == "bert"
        defaults = dict(_BERT_IDS) if self.model_type == "bert" else {
            **_ROBERTA_IDS, "index_prefix_first_instance_id": self.vocab_size - 2}
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)

    @property
    def prefix_length(self) -> int:
        """Tokens the demultiplexer's input convention adds in front: N + 1 for ``index``, else 0."""
        return self.num_instances + 1 if self.num_instances > 1 and self.demuxing_variant == "index" else 0

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> "MuxBertConfig":
        """Known keys are taken, unknown ones (``_name_or_path``, ``head_temperature``, ...) logged and ignored."""
        values = {**values, **overrides}
        if "num_labels" not in values and isinstance(values.get("id2label"), dict):
            values["num_labels"] = len(values["id2label"])  # Hugging Face configs store the labels, not the count
        known = {f.name for f in dataclasses.fields(cls)}
        ignored = sorted(set(values) - known)
        if ignored:
            logger.info("MuxBertConfig: ignoring config keys %s", ignored)
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def from_json(cls, path: str | os.PathLike, **overrides: Any) -> "MuxBertConfig":
        with open(path, encoding="utf-8") as f:
            try:
                values = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(values, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
