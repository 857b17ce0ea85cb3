"""Checkpoint directories: released ``princeton-nlp/muxbert_*`` / DataMUX ones, plain BERT, our own.

Every state-dict key is first mapped to one canonical name, the released layout (SPEC §5.3, §5.3b):
the aliased ``demultiplexer.demux_module.*`` / ``retrieval_head.demux_module.*`` copies and
``retrieval_head.bias`` collapse onto ``demux_module.*`` / ``retrieval_head.decoder.bias``, this
package's ``multiplexer.`` prefix disappears, and the DataMUX layout renames the backbone and heads.
The same map is applied to the model's own keys, so loading matches names in one space and
``save_pretrained`` writes the released layout (each tensor once: no aliases, no tied decoder).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .classification import MuxBertForSequenceClassification, MuxBertForTokenClassification
from .config import MuxBertConfig
from .masked_lm import MuxBertForMaskedLM
from .mux_bert import MuxBertModel

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
PICKLE_FILE = "pytorch_model.bin"

# (this package's key prefix, canonical prefix); the first matching rule wins.
_RENAMES = (
    ("multiplexer.", ""),
    ("demultiplexer.demux_module.", "demux_module."),
    ("retrieval_head.demux_module.", "demux_module."),
    ("retrieval_head.bias", "retrieval_head.decoder.bias"),  # the newer-transformers alias (§5.3b)
    ("cls.predictions.bias", "cls.predictions.decoder.bias"),
)
# DataMUX (RoBERTa) layout: backbone ``roberta.``, the classification heads live in ``demultiplexer``.
_DATAMUX_RENAMES = (
    ("bert.", "roberta."),
    ("classifier.dense.", "demultiplexer.dense_before_out_proj."),
    ("classifier.out_proj.", "demultiplexer.out_proj."),
    ("classifier.", "demultiplexer.decoder."),
    ("demultiplexer.bias", "demultiplexer.decoder.bias"),
)
# Checkpoint entries skipped when the model has no place for them (and ``*.embeddings.position_ids``).
_ALWAYS_IGNORED = ("bert.pooler.", "roberta.pooler.")
_BACKBONE_ROOTS = ("embeddings.", "encoder.", "pooler.")


@dataclass
class LoadingInfo:
    """What ``from_pretrained`` / ``from_bert`` did not load, by canonical (released) key name."""

    missing_keys: list[str] = field(default_factory=list)  # model tensors left at their initial value
    unexpected_keys: list[str] = field(default_factory=list)  # checkpoint tensors with no place in the model
    mismatched_keys: list[str] = field(default_factory=list)  # "key: checkpoint shape vs model shape"
    ignored_keys: list[str] = field(default_factory=list)  # known-unneeded (pooler, position ids, other heads)

    def problems(self) -> list[str]:
        return [
            f"{title}: {keys}"
            for title, keys in (("missing", self.missing_keys), ("unexpected", self.unexpected_keys),
                                ("shape mismatch", self.mismatched_keys))
            if keys
        ]


def canonical_name(key: str, config: MuxBertConfig) -> str:
    """The released-layout name of a model or checkpoint key (idempotent on released names)."""
    rules = _RENAMES + (_DATAMUX_RENAMES if config.model_type == "roberta" else ())
    for ours, canonical in rules:
        if key.startswith(ours):
            return canonical + key[len(ours):]
    return key


def _checkpoint_names(state_dict: dict[str, torch.Tensor], config: MuxBertConfig) -> dict[str, torch.Tensor]:
    """Canonical name -> tensor. A bare HF ``BertModel`` layout (``embeddings.*``) gets the backbone prefix."""
    backbone = "roberta." if config.model_type == "roberta" else "bert."
    bare = not any(k.startswith(("bert.", "roberta.")) for k in state_dict)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if bare and key.startswith(_BACKBONE_ROOTS):
            key = backbone + key
        out.setdefault(canonical_name(key, config), value)  # aliases hold the same values: keep the first
    return out


def _model_names(model: nn.Module) -> dict[str, torch.Tensor]:
    """Canonical name -> the model's parameter (aliases collapse; a tied weight appears under each name)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        out.setdefault(canonical_name(key, model.config), tensor)
    return out


# --- reading -------------------------------------------------------------------------------------


def read_state_dict(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Path]:
    """The tensors of ``model.safetensors`` (preferred) or ``pytorch_model.bin``, and the file read."""
    directory = Path(directory)
    safetensors_path, pickle_path = directory / SAFETENSORS_FILE, directory / PICKLE_FILE
    if safetensors_path.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(safetensors_path)), safetensors_path
        except Exception as exc:  # safetensors raises its own error types for every kind of damage
            raise ValueError(f"{safetensors_path}: not a readable safetensors file ({exc})") from exc
    if not pickle_path.is_file():
        raise FileNotFoundError(f"{directory}: found neither {SAFETENSORS_FILE} nor {PICKLE_FILE}")
    try:
        state_dict = torch.load(pickle_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated zip archives, disallowed globals
        raise ValueError(f"{pickle_path}: cannot be loaded with torch.load(weights_only=True) ({exc})") from exc
    if not isinstance(state_dict, dict):
        raise ValueError(f"{pickle_path}: expected a state dict, got {type(state_dict).__name__}")
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{pickle_path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    return state_dict, pickle_path


def _read_config_values(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_FILE}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def _config(values: dict[str, Any], state_dict: dict[str, torch.Tensor], overrides: dict[str, Any]) -> MuxBertConfig:
    """The checkpoint's config; the N = 1 baseline has a pooler exactly when the checkpoint does (and
    classifies from [CLS])."""
    merged = {**values, **overrides}
    if "add_pooling_layer" not in merged:
        has_pooler = any(".pooler." in k or k.startswith("pooler.") for k in state_dict)
        pools_cls = merged.get("classifier_pooling", "cls") == "cls"
        merged["add_pooling_layer"] = merged.get("num_instances", 1) == 1 and has_pooler and pools_cls
    return MuxBertConfig.from_dict(merged)


# --- loading into a model ------------------------------------------------------------------------


def load_weights(model: MuxBertModel, state_dict: dict[str, torch.Tensor], source: str | os.PathLike,
                 strict: bool = True) -> LoadingInfo:
    """Copy ``state_dict`` into ``model`` by canonical name (cast to the model's dtypes).

    ``strict``: any missing, unexpected or mis-shaped key raises ``ValueError`` naming ``source`` and
    the keys, before anything is copied. Otherwise they are skipped (and listed in the result).
    """
    targets = _model_names(model)
    info = LoadingInfo()
    plan: list[tuple[torch.Tensor, torch.Tensor]] = []
    loaded: set[int] = set()
    ignorable = _ALWAYS_IGNORED + tuple(model.ignored_checkpoint_prefixes)
    for name, value in _checkpoint_names(state_dict, model.config).items():
        target = targets.get(name)
        if target is None:
            ignored = name.endswith("embeddings.position_ids") or name.startswith(ignorable)
            (info.ignored_keys if ignored else info.unexpected_keys).append(name)
        elif target.shape != value.shape:
            shapes = f"{tuple(value.shape)} in the checkpoint, {tuple(target.shape)} in the model"
            info.mismatched_keys.append(f"{name}: {shapes}")
        else:
            plan.append((target, value))
            loaded.add(id(target))
    info.missing_keys = [name for name, t in targets.items() if id(t) not in loaded]
    problems = info.problems()
    if problems and strict:
        raise ValueError(f"{source}: the checkpoint does not fit {type(model).__name__}: " + "; ".join(problems))
    with torch.no_grad():
        for target, value in plan:
            target.copy_(value)
    if info.ignored_keys:
        logger.info("%s: ignored %s", source, info.ignored_keys)
    return info


def model_class_for(architectures: Optional[list[str]]) -> type[MuxBertModel]:
    """The task class named by a config's ``architectures`` (reference, HF and our names alike)."""
    name = " ".join(architectures or [])
    for marker, cls in (("SequenceClassification", MuxBertForSequenceClassification),
                        ("TokenClassification", MuxBertForTokenClassification),
                        ("MaskedLM", MuxBertForMaskedLM), ("PreTraining", MuxBertForMaskedLM),
                        ("Retrieval", MuxBertForMaskedLM)):
        if marker in name:
            return cls
    return MuxBertModel


def from_pretrained(
    path: str | os.PathLike,
    model_class: Optional[type[MuxBertModel]] = None,
    strict: bool = True,
    output_loading_info: bool = False,
    **config_overrides: Any,
):
    """A model from a directory with ``config.json`` and ``model.safetensors`` / ``pytorch_model.bin``.

    Reads released MUX-BERT checkpoints (either transformers flavour), DataMUX ``index`` ones, HF
    BERT ones (N = 1) and ``save_pretrained`` output. ``model_class`` defaults to the one the
    config's ``architectures`` names. ``instance_embedding`` is always taken from the checkpoint.
    Returns the model in eval mode, and its ``LoadingInfo`` too with ``output_loading_info``.
    """
    directory = Path(path)
    values = _read_config_values(directory)
    state_dict, source = read_state_dict(directory)
    config = _config(values, state_dict, config_overrides)
    model = (model_class or model_class_for(config.architectures))(config)
    info = load_weights(model, state_dict, source, strict)
    if info.problems():
        logger.warning("%s: loaded into %s, skipping %s", source, type(model).__name__, "; ".join(info.problems()))
    model.eval()
    return (model, info) if output_loading_info else model


def from_bert(
    path: str | os.PathLike,
    model_class: type[MuxBertModel] = MuxBertForSequenceClassification,
    output_loading_info: bool = False,
    **config_overrides: Any,
):
    """A new MUX model (``num_instances``, ``muxing_variant``, ``demuxing_variant``, ``num_labels``, ...
    as ``config_overrides``) whose backbone comes from a plain BERT checkpoint directory.

    Accepts the HF ``BertModel`` layout (``embeddings.*``, no prefix) and the ``bert.``-prefixed one.
    Every backbone tensor must be present; the MUX modules and heads start from their initial values.
    """
    directory = Path(path)
    values = _read_config_values(directory)
    state_dict, source = read_state_dict(directory)
    model = model_class(_config(values, state_dict, config_overrides))
    info = load_weights(model, state_dict, source, strict=False)
    backbone = "roberta." if model.config.model_type == "roberta" else "bert."
    missing_backbone = [k for k in info.missing_keys if k.startswith(backbone)]
    if missing_backbone:
        raise ValueError(f"{source}: the BERT checkpoint lacks backbone tensors {missing_backbone}")
    logger.info("%s: new (not in the checkpoint) %s", source, info.missing_keys)
    return (model, info) if output_loading_info else model


def save_pretrained(model: MuxBertModel, path: str | os.PathLike) -> None:
    """Write ``config.json`` and ``model.safetensors`` (released key layout, each tensor once)."""
    from safetensors.torch import save_file

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:  # a second name of a shared module or a tied decoder
            continue
        seen.add(id(tensor))
        tensors[canonical_name(key, model.config)] = tensor.detach().contiguous()
    save_file(tensors, str(directory / SAFETENSORS_FILE), metadata={"format": "pt"})
    replace(model.config, architectures=[type(model).__name__]).to_json(directory / CONFIG_FILE)
