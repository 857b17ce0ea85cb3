"""Resumable checkpoints: the model via ``save_pretrained`` plus the trainer state in one directory.

The state holds optimizer, scheduler, step and every random-number stream (global torch, CUDA,
the collator's generator), so a resumed run draws the same masks, dropout and batches as an
uninterrupted one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch

STATE_FILE = "trainer_state.pt"


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "collator": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["collator"])


def save_checkpoint(directory: str | Path, model, optimizer, scheduler, step: int, generator: torch.Generator,
                    extra: Optional[dict[str, Any]] = None) -> None:
    """Write to a temporary directory first and swap it in, so a crash never leaves half a checkpoint."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    model.save_pretrained(tmp)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
             "rng": rng_state(generator), "extra": extra or {}}
    torch.save(state, tmp / STATE_FILE)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old.exists():
        for path in old.iterdir():
            path.unlink()
        old.rmdir()


def has_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / STATE_FILE).is_file()


def load_training_state(directory: str | Path, optimizer, scheduler, generator: torch.Generator) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG streams (the model is loaded by the caller); returns the state."""
    state = torch.load(Path(directory) / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"], generator)
    return state
