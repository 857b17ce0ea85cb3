"""Which multiplexer, demultiplexer and retrieval head a ``MuxBertConfig`` asks for."""

from __future__ import annotations

from typing import Optional

from torch import nn

from ..nn.contextual_multiplexer import ContextualMultiplexer
from ..nn.index_demultiplexer import IndexPrefixDemultiplexer, IndexPrefixRetrievalHead
from ..nn.index_prefix import IndexPrefix
from ..nn.keyed_demultiplexer import KeyedDemultiplexer
from ..nn.multiplexers import BinaryHadamardMultiplexer, GaussianMultiplexer, OrthogonalMultiplexer
from ..nn.rsa_demultiplexer import RSADemultiplexer, RSADemuxModule, RSARetrievalHead
from .config import MuxBertConfig


def build_multiplexer(config: MuxBertConfig) -> nn.Module:
    N, d, learnable = config.num_instances, config.hidden_size, bool(config.learn_muxing)
    variant = config.muxing_variant
    if variant == "gaussian_hadamard":
        return GaussianMultiplexer(N, d, config.gaussian_hadamard_norm, learnable)
    if variant == "binary_hadamard":
        return BinaryHadamardMultiplexer(N, d, config.binary_hadamard_epsilon, learnable)
    if variant in ("random_ortho", "random_ortho_low_rank"):
        return OrthogonalMultiplexer(N, d, low_rank=variant == "random_ortho_low_rank", learnable=learnable)
    return ContextualMultiplexer.from_config(config)


def index_prefix(config: MuxBertConfig) -> IndexPrefix:
    return IndexPrefix(
        config.num_instances,
        config.index_prefix_fill_id,
        config.index_prefix_first_instance_id,
        config.index_prefix_cls_id,
    )


def _rsa_demux_module(config: MuxBertConfig) -> RSADemuxModule:
    return RSADemuxModule(
        config.num_instances, config.hidden_size, config.num_hidden_demux_layers,
        config.layer_norm_eps, config.hidden_dropout_prob,
    )


def build_demultiplexer(config: MuxBertConfig) -> KeyedDemultiplexer:
    """The task-path demultiplexer: ``(G, L', d)`` to per-instance features ``(G, N, P, d)``."""
    if config.demuxing_variant == "index_pos":
        return RSADemultiplexer(
            config.num_instances, config.hidden_size, config.num_hidden_demux_layers, config.layer_norm_eps,
            config.hidden_dropout_prob, demux_module=_rsa_demux_module(config),
        )
    return IndexPrefixDemultiplexer(
        config.num_instances, config.hidden_size, config.layer_norm_eps, index_prefix(config)
    )


def build_retrieval_head(config: MuxBertConfig, demultiplexer: Optional[KeyedDemultiplexer]) -> KeyedDemultiplexer:
    """The retrieval / masked-LM head; for ``index_pos`` it shares the task demultiplexer's ``demux_module``."""
    if config.demuxing_variant == "index_pos":
        demux_module = demultiplexer.demux_module if demultiplexer is not None else _rsa_demux_module(config)
        return RSARetrievalHead(demux_module, config.vocab_size)
    return IndexPrefixRetrievalHead(
        config.num_instances, config.hidden_size, config.vocab_size, config.layer_norm_eps, index_prefix(config)
    )
