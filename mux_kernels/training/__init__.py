"""Training MUX-BERT: data preparation, the three objectives (prime, mlm, finetune) and the loop."""

from .stages import STAGES, load_model
from .trainer import Trainer, TrainingArguments

__all__ = ["STAGES", "Trainer", "TrainingArguments", "load_model"]
