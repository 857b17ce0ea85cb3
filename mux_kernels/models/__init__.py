"""A thin MUX-BERT: config, backbone, task models and checkpoint loading."""

from .classification import MuxBertForSequenceClassification, MuxBertForTokenClassification
from .config import MuxBertConfig
from .loading import LoadingInfo, from_bert, from_pretrained, save_pretrained
from .masked_lm import MuxBertForMaskedLM
from .mux_bert import MuxBertModel, MuxEncoderOutput
from .outputs import MuxBertOutput

__all__ = [
    "MuxBertConfig",
    "MuxBertModel",
    "MuxEncoderOutput",
    "MuxBertForSequenceClassification",
    "MuxBertForTokenClassification",
    "MuxBertForMaskedLM",
    "MuxBertOutput",
    "LoadingInfo",
    "from_pretrained",
    "from_bert",
    "save_pretrained",
]
