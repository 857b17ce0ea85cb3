"""The drop-in modules of mux_kernels.nn against plain-torch computations from SPEC.md."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import reference_model as ref
from mux_kernels import reference
from mux_kernels.models import MuxBertForTokenClassification
from mux_kernels.nn import (
    BinaryHadamardMultiplexer,
    ContextualMultiplexer,
    GaussianMultiplexer,
    IndexPrefix,
    IndexPrefixDemultiplexer,
    IndexPrefixRetrievalHead,
    MLPDemultiplexer,
    MultiplexedEncoder,
    OrthogonalMultiplexer,
    RSADemultiplexer,
    RSARetrievalHead,
)
from mux_kernels.nn.mixing_vectors import haar_orthogonal
from tiny_models import perturb, random_batch, tiny_config

TOL = dict(atol=1e-5, rtol=1e-5)


def prefixed(module, prefix):
    return {f"{prefix}{k}": v.detach() for k, v in module.state_dict().items()}


# --- multiplexers -----------------------------------------------------------------------------


def test_gaussian_multiplexer_vectors_and_mix():
    mux = GaussianMultiplexer(4, 16, norm=20.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mux.instance_embedding.norm(dim=1), torch.full((4,), 20.0))
    assert not mux.instance_embedding.requires_grad
    assert GaussianMultiplexer(4, 16, learnable=True).instance_embedding.requires_grad
    x = torch.randn(3, 4, 5, 16)
    expected = reference.multiplex(x, mux.instance_embedding.detach(), 1 / 4)
    torch.testing.assert_close(mux(x), expected, **TOL)
    torch.testing.assert_close(mux(x.reshape(12, 5, 16)), expected, **TOL)  # (B, L, d), row g*N + i
    with pytest.raises(ValueError, match="multiple of num_instances"):
        mux(torch.randn(7, 5, 16))


def test_binary_hadamard_masks_partition_the_coordinates():
    masks = BinaryHadamardMultiplexer(3, 10).instance_embedding
    assert torch.equal(masks.sum(0), torch.ones(10)) and masks[2].sum() == 4  # the last chunk takes the rest
    overlapping = BinaryHadamardMultiplexer(3, 10, epsilon=0.5).instance_embedding
    assert (overlapping.sum(0) > 1).any() and (overlapping >= masks).all()


@pytest.mark.parametrize("low_rank", [False, True])
def test_orthogonal_multiplexer(low_rank):
    N, d = 4, 12
    mux = OrthogonalMultiplexer(N, d, low_rank=low_rank, generator=torch.Generator().manual_seed(0))
    W = mux.instance_embedding.detach()
    if low_rank:
        assert all(torch.linalg.matrix_rank(W[i]) == d // N for i in range(N))
        total = W.sum(0)  # the column blocks partition H, so the N maps add up to U H^T: orthogonal
        torch.testing.assert_close(total @ total.T, torch.eye(d), atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(W @ W.transpose(1, 2), torch.eye(d).expand(N, d, d), atol=1e-5, rtol=0)
    x = torch.randn(2, N, 3, d)
    expected = sum(x[:, i] @ W[i] for i in range(N)) / math.sqrt(N)
    torch.testing.assert_close(mux(x), expected, **TOL)


def test_haar_orthogonal_special_has_determinant_one():
    for seed in range(4):
        q = haar_orthogonal(6, torch.Generator().manual_seed(seed), special=True)
        assert torch.linalg.det(q.double()).item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("mask_instances", [False, True])
def test_contextual_multiplexer_matches_spec(mask_instances):
    config = tiny_config(num_instances=3)
    mux = perturb(ContextualMultiplexer.from_config(config)).eval()
    _, mask, _ = random_batch(6, 7)
    x = torch.randn(6, 7, 32)
    cfg = {**config.to_dict(), "muxing_variant": "gaussian_attention_v2"}
    expected = ref.multiplex(prefixed(mux, ""), cfg, x, mask, seq_cls=mask_instances)
    with torch.no_grad():
        torch.testing.assert_close(mux(x, mask, mask_instances), expected, atol=1e-5, rtol=1e-4)


# --- demultiplexers ---------------------------------------------------------------------------


def rsa_pair(N=3, d=32, layers=3):
    task = perturb(RSADemultiplexer(N, d, layers, dropout=0.0))
    head = perturb(RSARetrievalHead(task.demux_module, vocab_size=50), seed=1)
    sd = {**prefixed(task, "demultiplexer."), **prefixed(head, "retrieval_head.")}
    sd.update({k[len("demultiplexer."):]: v for k, v in sd.items() if k.startswith("demultiplexer.demux_module.")})
    cfg = {"num_hidden_demux_layers": layers, "layer_norm_eps": 1e-12}
    return task.eval(), head.eval(), sd, cfg


@pytest.mark.parametrize("layers", [2, 3, 4])
def test_rsa_task_and_retrieval_paths_match_spec(layers):
    task, head, sd, cfg = rsa_pair(layers=layers)
    h = torch.randn(2, 6, 32)
    with torch.no_grad():
        torch.testing.assert_close(task(h), ref.rsa_task(sd, cfg, h), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(head(h), ref.rsa_retrieval(sd, cfg, h), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(task(h, slice(0, 1)), ref.rsa_task(sd, cfg, h[:, :1]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("module", ["rsa", "index"])
def test_select_equals_the_dense_rows(module):
    if module == "rsa":
        _, head, _, _ = rsa_pair()
    else:
        head = perturb(IndexPrefixRetrievalHead(3, 32, 50)).eval()
    h = torch.randn(2, 8, 32)
    groups, instances, positions = torch.tensor([0, 1, 1, 0]), torch.tensor([2, 0, 1, 2]), torch.tensor([7, 3, 3, 4])
    with torch.no_grad():
        selected = head.select(h, groups, instances, positions)
        torch.testing.assert_close(selected, head(h)[groups, instances, positions], **TOL)


def test_index_prefix_layout():
    prefix = IndexPrefix(3, fill_id=680, first_instance_id=678, cls_id=101)
    ones = torch.ones(6, 2, dtype=torch.long)
    ids, mask, types = prefix.apply(torch.full((6, 2), 7), ones, ones)
    assert ids[4].tolist() == [680, 677, 680, 101, 7, 7]  # row 4 is instance 1
    assert mask[:, :4].eq(1).all() and types[:, :4].eq(0).all() and ids.shape == (6, 6)


def test_index_prefix_demultiplexer_matches_spec():
    demux = perturb(IndexPrefixDemultiplexer(3, 32)).eval()
    h = torch.randn(2, 9, 32)
    sd = prefixed(demux, "demultiplexer.")
    cfg = {"num_instances": 3, "layer_norm_eps": 1e-12}
    expected = ref.index_demux(sd, cfg, "demultiplexer", h)
    with torch.no_grad():
        torch.testing.assert_close(demux(h), expected, **TOL)
        torch.testing.assert_close(demux(h, slice(3, 4)), expected[:, :, 3:4], **TOL)
    ids, _, _ = demux.add_prefix(torch.ones(3, 5, dtype=torch.long))
    assert ids.shape == (3, 9)


def test_mlp_demultiplexer_equals_n_linears():
    demux = perturb(MLPDemultiplexer(4, 16, dropout=0.0)).eval()
    h = torch.randn(2, 5, 16)
    with torch.no_grad():
        hidden = [F.gelu(F.linear(h, demux.weight[i], demux.bias[i])) for i in range(4)]
        expected = torch.stack([
            F.layer_norm(a, (16,), demux.ln_weight[i], demux.ln_bias[i], 1e-12) for i, a in enumerate(hidden)
        ], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(demux(h), expected, **TOL)


def test_demultiplexer_backward_runs_the_fused_op():
    task, _, _, _ = rsa_pair()
    h = torch.randn(2, 4, 32, requires_grad=True)
    task(h).sum().backward()
    assert h.grad is not None and task.demux_module.demux_instance_embedding.grad is not None


# --- wrapping a Hugging Face encoder ----------------------------------------------------------


@pytest.mark.parametrize("batch_size", [4, 5])  # 5: ragged, padded with the last row
def test_multiplexed_encoder_wraps_transformers_bert(batch_size):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    model = perturb(MuxBertForTokenClassification(tiny_config(num_instances=2))).eval()
    cfg = model.config
    hf = transformers.BertModel(transformers.BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
    ), add_pooling_layer=False).eval()
    backbone = {k[len("bert."):]: v for k, v in model.state_dict().items() if k.startswith("bert.")}
    hf.load_state_dict(backbone, strict=False)
    wrapped = MultiplexedEncoder(hf, model.multiplexer, model.demultiplexer)
    ids, mask, _ = random_batch(batch_size, 9, seed=3)
    with torch.no_grad():
        embeds = hf.embeddings(input_ids=ids)  # the first embedding pass; the wrapper runs the second
        got = wrapped(embeds, mask)
        encoded = model.encode(ids, mask)
        expected = model.instance_features(encoded, slice(None))
    assert got.shape == (batch_size, 9, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
