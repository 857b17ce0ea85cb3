"""Drop-in multiplexing / demultiplexing modules built on the fused ``torch.ops.mux`` ops.

Layout everywhere (SPEC §1): un-multiplexed row ``g*N + i`` is instance ``i`` of group ``g``.
Multiplexers map ``(G, N, L, d)`` (or ``(B, L, d)``) to ``(G, L, d)``; demultiplexers map the
encoder output ``(G, L, d)`` to ``(G, N, P, e)``.
"""

from .bert_layer import BertLayer
from .contextual_multiplexer import ContextualMultiplexer
from .grouping import group_instances, multiplexed_attention_mask, pad_rows, rows_to_pad
from .index_demultiplexer import IndexPrefixDemultiplexer, IndexPrefixRetrievalHead
from .index_prefix import IndexPrefix
from .keyed_demultiplexer import KeyedDemultiplexer
from .mlp_demultiplexer import MLPDemultiplexer
from .multiplexed_encoder import MultiplexedEncoder
from .multiplexers import (
    BinaryHadamardMultiplexer,
    GaussianMultiplexer,
    HadamardMultiplexer,
    Multiplexer,
    OrthogonalMultiplexer,
)
from .rsa_demultiplexer import RSADemultiplexer, RSADemuxModule, RSARetrievalHead

__all__ = [
    "BertLayer",
    "Multiplexer",
    "HadamardMultiplexer",
    "GaussianMultiplexer",
    "BinaryHadamardMultiplexer",
    "OrthogonalMultiplexer",
    "ContextualMultiplexer",
    "KeyedDemultiplexer",
    "RSADemuxModule",
    "RSADemultiplexer",
    "RSARetrievalHead",
    "IndexPrefix",
    "IndexPrefixDemultiplexer",
    "IndexPrefixRetrievalHead",
    "MLPDemultiplexer",
    "MultiplexedEncoder",
    "group_instances",
    "multiplexed_attention_mask",
    "pad_rows",
    "rows_to_pad",
]
