"""Inference throughput of MUX-BERT against N: instances per second, sequence and token classification,
with the RSA (``index_pos``) and prefix (``index``) demultiplexers.

Every forward sees G multiplexed sequences of L tokens, i.e. G·N instances, as MUX-PLMs' throughput
loop does (SPEC §6.3: a fixed number of muxed sequences per batch). Providers: ``mux_kernels`` (the
model as written, on torch.ops.mux) and ``reference`` (the same model with every torch.ops.mux call
answered by ``mux_kernels.reference``: the plain-torch reference forward). N=1 (``num_instances=1``)
is plain BERT, the baseline of the N× speedup.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness import DEVICE, skip_if_not_implemented, time_call
from mux_kernels import reference

from mux_kernels.models import MuxBertConfig, MuxBertForSequenceClassification, MuxBertForTokenClassification

SEQ_LEN = 128
GROUPS = 32 if DEVICE.type == "cuda" else 8  # muxed sequences per forward
NUM_LABELS = 3
SIZES = {
    "quick": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024),
    "full": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),  # base
}
INSTANCES = {"quick": (2, 5, 10), "full": (2, 5, 10, 20)}
CLASSES = {"sequence": MuxBertForSequenceClassification, "token": MuxBertForTokenClassification}


@dataclass(frozen=True)
class ModelCase:
    task: str  # "sequence" or "token" classification
    N: int
    demux: str | None  # demuxing_variant; None for plain BERT (N=1)
    provider: str  # "mux_kernels", "reference", or "bert" for N=1

    def __str__(self) -> str:
        return "-".join(str(part) for part in (self.task, f"N{self.N}", self.demux, self.provider) if part)


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = [
            ModelCase(task, N, demux, provider)
            for task in CLASSES
            for N in INSTANCES[metafunc.config.getoption("bench_mode")]
            for demux in ("index_pos", "index")
            for provider in ("mux_kernels", "reference")
        ]
        cases += [ModelCase(task, 1, None, "bert") for task in CLASSES]
        metafunc.parametrize("case", cases, ids=str)


_REFERENCES = {
    torch.ops.mux.multiplex.default: reference.multiplex,
    torch.ops.mux.multiplex_embeddings.default: reference.multiplex_embeddings,
    torch.ops.mux.demultiplex.default: reference.demultiplex,
}


class ReferenceOps(TorchDispatchMode):
    """Answers every torch.ops.mux call with its plain-torch reference (same argument order); the rest runs as is."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _REFERENCES.get(func, func)(*args, **(kwargs or {}))


@pytest.mark.benchmark(group="model")
def test_throughput(benchmark, pytestconfig, budget_s, case, dtype):
    size = SIZES[pytestconfig.getoption("bench_mode")]
    options = dict(size, num_instances=case.N, num_labels=NUM_LABELS)
    if case.demux:
        options["demuxing_variant"] = case.demux
    config = MuxBertConfig(**options)
    model = CLASSES[case.task](config).to(DEVICE, dtype).eval()
    input_ids = torch.randint(1000, config.vocab_size, (GROUPS * case.N, SEQ_LEN), device=DEVICE)

    def forward():
        with torch.inference_mode(), ReferenceOps() if case.provider == "reference" else contextlib.nullcontext():
            return model(input_ids).logits

    benchmark.extra_info.update(
        suite="models", task=case.task, N=case.N, demux=case.demux, provider=case.provider,
        device=DEVICE.type, dtype=str(dtype).removeprefix("torch."), groups=GROUPS, seq_len=SEQ_LEN, **size,
    )  # fmt: skip
    with skip_if_not_implemented():
        seconds = time_call(benchmark, forward, (), budget_s)
    if seconds is not None:
        benchmark.extra_info["instances_per_s"] = GROUPS * case.N / seconds
