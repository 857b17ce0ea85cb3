"""The training loop shared by the three stages.

AdamW with linear warm-up and decay, gradient clipping, autocast, gradient accumulation, periodic
evaluation and checkpoints, resume, DistributedDataParallel. Batches are built from *groups*: each
epoch permutes the rows (the same permutation on every rank), cuts them into groups of N consecutive
rows (one multiplexed sequence each) and deals the groups to the ranks with a DistributedSampler.
Rank r's k-th batch therefore holds exactly the groups a single process would see in its k-th batch
of ``world_size`` times the size, so a DDP run follows the single-process run on the global batch.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from .checkpoint import load_training_state, save_checkpoint
from .distributed import ProcessInfo
from .metrics import MetricsLog
from .objectives import accuracy_counts

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainingArguments:
    output_dir: Path
    batch_size: int = 8  # multiplexed groups (N rows each) per micro-batch and process
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_steps: int = 1000  # optimizer steps; the schedule decays to zero here
    max_minutes: Optional[float] = None  # wall-clock bound on the training loop (evaluation included)
    max_grad_norm: float = 1.0
    precision: str = "fp32"
    eval_every: int = 100
    save_every: Optional[int] = None  # default: at every evaluation
    max_eval_rows: Optional[int] = None  # periodic evaluations only; the test split is always scored whole
    log_every: int = 10
    seed: int = 0
    progress: bool = True


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """No weight decay on biases and LayerNorm weights (the BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.dim() < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def group_batches(num_rows: int, num_instances: int, batch_groups: int, epoch: int, seed: int,
                  process: ProcessInfo) -> list[torch.Tensor]:
    """This rank's row indices for every micro-batch of ``epoch`` (see the module docstring)."""
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed + epoch))
    groups = order[: num_rows // num_instances * num_instances].view(-1, num_instances)
    sampler = DistributedSampler(range(len(groups)), num_replicas=process.world_size, rank=process.rank,
                                 shuffle=False, drop_last=True)
    mine = groups[list(sampler)]
    return [mine[i : i + batch_groups].flatten() for i in range(0, len(mine) - batch_groups + 1, batch_groups)]


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        collate: Callable[[dict[str, torch.Tensor], torch.Generator], dict[str, torch.Tensor]],
        train_data: dict[str, torch.Tensor],
        args: TrainingArguments,
        eval_data: Optional[dict[str, torch.Tensor]] = None,
        process: Optional[ProcessInfo] = None,
    ):
        process = process or ProcessInfo()
        if args.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {args.precision!r}")
        if args.precision == "fp16" and process.device.type != "cuda":
            raise ValueError("fp16 autocast needs a CUDA device; use bf16 on the CPU")
        self.args, self.process, self.collate = args, process, collate
        self.model = model.to(process.device)
        self.num_instances = model.config.num_instances
        self.train_data, self.eval_data = train_data, eval_data
        self.batches_per_epoch = len(group_batches(len(train_data["input_ids"]), self.num_instances,
                                                   args.batch_size, 0, args.seed, process))
        if self.batches_per_epoch < args.grad_accum:
            raise ValueError(f"the training set gives {self.batches_per_epoch} micro-batches per epoch and process, "
                             f"fewer than grad_accum={args.grad_accum}; lower batch_size")
        self.wrapped = (DistributedDataParallel(self.model, find_unused_parameters=True)
                        if process.world_size > 1 else self.model)
        self.optimizer = build_optimizer(self.model, args.lr, args.weight_decay)
        self.scheduler = linear_schedule(self.optimizer, int(args.warmup_ratio * args.max_steps), args.max_steps)
        self.scaler = torch.amp.GradScaler(process.device.type, enabled=args.precision == "fp16")
        self.generator = torch.Generator().manual_seed(args.seed + 1000 * process.rank)  # masks differ per rank
        self.step = 0
        self.log = MetricsLog(Path(args.output_dir) / "metrics.jsonl" if process.is_main else None)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.args.output_dir) / "checkpoint"

    def autocast(self):
        dtype = PRECISIONS[self.args.precision]
        return torch.autocast(self.process.device.type, dtype=dtype, enabled=dtype is not None)

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.process.device, non_blocking=True) for k, v in batch.items()}

    # --- data ---------------------------------------------------------------------------------

    def micro_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Collated micro-batches from the current step on, epoch after epoch (the resume point
        is skipped to by index, so no skipped batch consumes random numbers)."""
        position = self.step * self.args.grad_accum
        while True:
            epoch, offset = divmod(position, self.batches_per_epoch)
            batches = group_batches(len(self.train_data["input_ids"]), self.num_instances, self.args.batch_size,
                                    epoch, self.args.seed, self.process)
            for rows in batches[offset:]:
                yield self.collate({k: v[rows] for k, v in self.train_data.items()}, self.generator)
            position += len(batches) - offset

    # --- training -----------------------------------------------------------------------------

    def resume(self, checkpoint: str | Path) -> None:
        """Continue from ``checkpoint`` (whose model weights the caller already loaded)."""
        state = load_training_state(checkpoint, self.optimizer, self.scheduler, self.generator)
        self.step = state["step"]

    def train_step(self, batches: Iterator[dict[str, torch.Tensor]]) -> tuple[float, int, int, int]:
        """One optimizer step over ``grad_accum`` micro-batches: (loss, correct, scored, rows)."""
        self.wrapped.train()
        total_loss, correct, scored, rows = 0.0, 0, 0, 0
        for micro in range(self.args.grad_accum):
            batch = self.to_device(next(batches))
            last = micro == self.args.grad_accum - 1
            sync = self.wrapped.no_sync() if self.process.world_size > 1 and not last else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    output = self.wrapped(**batch)
                loss = output.loss / self.args.grad_accum
                self.scaler.scale(loss).backward()
            total_loss += float(loss.detach())
            c, s = accuracy_counts(output, batch["labels"])
            correct, scored, rows = correct + c, scored + s, rows + len(batch["input_ids"])
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total_loss, correct, scored, rows

    def out_of_time(self, started: float) -> bool:
        """Every rank stops at the same step: rank 0's clock decides."""
        if self.args.max_minutes is None:
            return False
        flag = torch.tensor([float(time.monotonic() - started > 60 * self.args.max_minutes)],
                            device=self.process.device)  # NCCL broadcasts CUDA tensors only
        if self.process.world_size > 1:
            dist.broadcast(flag, src=0)
        return bool(flag.item())

    def train(self) -> dict[str, float]:
        """Train to ``max_steps`` (or ``max_minutes``); returns the last evaluation (or training) metrics."""
        args, started = self.args, time.monotonic()
        batches = self.micro_batches()
        bar = tqdm(total=args.max_steps, initial=self.step, disable=not (args.progress and self.process.is_main),
                   desc="train", dynamic_ncols=True)
        window = [0.0, 0, 0, 0, 0]  # loss sum, correct, scored, rows, steps since the last log
        window_start = time.perf_counter()
        last: dict[str, float] = {}
        stopped_early = False
        while self.step < args.max_steps:
            if self.out_of_time(started):
                stopped_early = True
                break
            loss, correct, scored, rows = self.train_step(batches)
            window = [window[0] + loss, window[1] + correct, window[2] + scored, window[3] + rows, window[4] + 1]
            bar.update(1)
            if self.step % args.log_every == 0 or self.step == args.max_steps:
                last = {"loss": window[0] / window[4], "accuracy": window[1] / max(window[2], 1)}
                bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.3f}")
                self.log.write(split="train", step=self.step, lr=self.scheduler.get_last_lr()[0],
                               elapsed_s=round(time.monotonic() - started, 1),
                               rows_per_s=round(window[3] * self.process.world_size
                                                / (time.perf_counter() - window_start), 2), **last)
                window, window_start = [0.0, 0, 0, 0, 0], time.perf_counter()
            if self.eval_data is not None and self.step % args.eval_every == 0:
                last = self.evaluate_and_log(self.eval_data, "eval", args.max_eval_rows)
            if self.step % (args.save_every or args.eval_every) == 0:
                self.save_checkpoint()
            if window[4] == 0:  # evaluation and saving stay out of the training throughput
                window_start = time.perf_counter()
        bar.close()
        if self.eval_data is not None and self.step % args.eval_every != 0:
            last = self.evaluate_and_log(self.eval_data, "eval", args.max_eval_rows)
        self.save_checkpoint()
        if self.process.is_main:
            self.model.save_pretrained(args.output_dir)
        self.log.write(split="end", step=self.step, stopped_early=stopped_early,
                       elapsed_s=round(time.monotonic() - started, 1))
        return last

    def save_checkpoint(self) -> None:
        if self.process.is_main:
            save_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.scheduler, self.step, self.generator)

    # --- evaluation ---------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, data: dict[str, torch.Tensor], max_rows: Optional[int] = None) -> dict[str, float]:
        """Loss, accuracy and rows/s of the (unwrapped) model on the first ``max_rows`` of ``data`` (all
        by default), with a fixed seed for the collator's random draws so every evaluation scores the
        same targets."""
        self.model.eval()
        generator = torch.Generator().manual_seed(self.args.seed + 12345)
        rows_total = len(data["input_ids"])
        if max_rows is not None:
            rows_total = min(rows_total, max_rows)
        step_rows = self.args.batch_size * self.num_instances
        rows_total -= rows_total % self.num_instances
        loss_sum, batches, correct, scored, seconds = 0.0, 0, 0, 0, 0.0
        for start in range(0, rows_total, step_rows):
            rows = slice(start, min(start + step_rows, rows_total))
            batch = self.to_device(self.collate({k: v[rows] for k, v in data.items()}, generator))
            t0 = time.perf_counter()
            with self.autocast():
                output = self.model(**batch)
            seconds += time.perf_counter() - t0
            loss_sum += float(output.loss)
            batches += 1
            c, s = accuracy_counts(output, batch["labels"])
            correct, scored = correct + c, scored + s
        return {"loss": loss_sum / max(batches, 1), "accuracy": correct / max(scored, 1),
                "rows": rows_total, "rows_per_s": rows_total / max(seconds, 1e-9)}

    def evaluate_and_log(self, data: dict[str, torch.Tensor], split: str,
                         max_rows: Optional[int] = None) -> dict[str, float]:
        if not self.process.is_main:
            return {}
        metrics = self.evaluate(data, max_rows)
        self.log.write(split=split, step=self.step, **metrics)
        tqdm.write(f"step {self.step} {split}: " + " ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
        return metrics
