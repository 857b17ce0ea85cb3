"""An independent plain-torch forward of MUX-BERT, written straight from SPEC.md.

No ``torch.ops.mux`` and no ``mux_kernels`` modules: it reads a state dict in the released key
layout (SPEC §5.3) and a config dict, and computes the reference pipeline (SPEC §2-4) the way the
reference code does, with the concatenations it materialises. Eval mode only (no dropout).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _linear(sd, name, x):
    return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))


def _layer_norm(sd, name, x, eps):
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps)


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _backbone(cfg):
    return "roberta" if cfg["model_type"] == "roberta" else "bert"


def extended_mask(mask):
    """HF 4.4.2: additive -10000 on padded keys."""
    return None if mask is None else (1.0 - mask[:, None, None, :].float()) * -10000.0


def embed(sd, cfg, ids=None, token_type_ids=None, inputs_embeds=None):
    """``LN(word[ids] | inputs_embeds + pos + type)`` (§2.1 steps 1 and 3)."""
    p = _backbone(cfg) + ".embeddings."
    pad = cfg["pad_token_id"]
    # nn.Embedding(padding_idx=pad) in HF: the pad row gets no gradient from the lookup.
    x = F.embedding(ids, sd[p + "word_embeddings.weight"], padding_idx=pad) if inputs_embeds is None else inputs_embeds
    B, L = x.shape[:2]
    if cfg["model_type"] != "roberta":
        positions = torch.arange(L).expand(B, L)
    elif inputs_embeds is None:  # RoBERTa: padding-aware positions for ids, sequential from pad+1 for embeds
        real = (ids != pad).long()
        positions = torch.cumsum(real, 1) * real + pad
    else:
        positions = torch.arange(pad + 1, pad + 1 + L).expand(B, L)
    types = torch.zeros(B, L, dtype=torch.long) if token_type_ids is None else token_type_ids
    x = x + sd[p + "position_embeddings.weight"][positions] + sd[p + "token_type_embeddings.weight"][types]
    return _layer_norm(sd, p + "LayerNorm", x, cfg["layer_norm_eps"])


def bert_layer(sd, cfg, name, x, mask_add):
    B, L, d = x.shape
    H = cfg["num_attention_heads"]
    eps = cfg["layer_norm_eps"]

    def heads(t):
        return t.view(B, L, H, d // H).permute(0, 2, 1, 3)

    q = heads(_linear(sd, name + ".attention.self.query", x))
    k = heads(_linear(sd, name + ".attention.self.key", x))
    v = heads(_linear(sd, name + ".attention.self.value", x))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // H)
    if mask_add is not None:
        scores = scores + mask_add
    ctx = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(B, L, d)
    attended = _linear(sd, name + ".attention.output.dense", ctx) + x
    a = _layer_norm(sd, name + ".attention.output.LayerNorm", attended, eps)
    i = _gelu(_linear(sd, name + ".intermediate.dense", a))
    return _layer_norm(sd, name + ".output.LayerNorm", _linear(sd, name + ".output.dense", i) + a, eps)


def encoder(sd, cfg, h, mask=None):
    for k in range(cfg["num_hidden_layers"]):
        h = bert_layer(sd, cfg, f"{_backbone(cfg)}.encoder.layer.{k}", h, extended_mask(mask))
    return h


def multiplex(sd, cfg, E, mask, seq_cls):
    """§2.2-2.4 on the first-pass embeddings ``E (B, L, d)``."""
    N = cfg["num_instances"]
    B, L, d = E.shape
    G = B // N
    v = sd["instance_embedding"]
    variant = cfg["muxing_variant"]
    if variant in ("gaussian_hadamard", "binary_hadamard"):
        return (v[None, :, None, :].expand(G, N, L, d) * E.view(G, N, L, d)).mean(dim=1)
    if variant in ("random_ortho", "random_ortho_low_rank"):
        return sum(E.view(G, N, L, d)[:, i] @ v[i] for i in range(N)) / math.sqrt(N)
    assert variant == "gaussian_attention_v2"
    a1 = bert_layer(sd, cfg, "muxing_attention", E, extended_mask(mask)) + E
    gt = a1.view(G, N, L, d) * v[None, :, None, :]
    seq = gt.permute(0, 2, 1, 3).reshape(G * L, N, d)
    inst_mask = None
    if seq_cls and mask is not None:
        inst_mask = mask.view(G, N, L).permute(0, 2, 1).reshape(G * L, N)
    a2 = bert_layer(sd, cfg, "muxing_attention_2", seq, extended_mask(inst_mask))
    a2 = a2.view(G, L, N, d).permute(0, 2, 1, 3)
    return (a2 + gt).mean(dim=1)


def _concat(keys, h):
    """``[key_i ; h_t]`` for every (g, i, t): ``(G, N, L, 2d)``. keys ``(N, d)`` or ``(G, N, d)``."""
    G, L, d = h.shape
    N = keys.shape[-2]
    keys = keys.expand(G, N, d)
    return torch.cat([keys[:, :, None].expand(G, N, L, d), h[:, None].expand(G, N, L, d)], dim=-1)


def rsa_task(sd, cfg, h):
    """§3.3 task path as executed: no layer_norm_j, loop stops at n-1."""
    eps = cfg["layer_norm_eps"]
    a = _gelu(_linear(sd, "demux_module.dense_1", _concat(sd["demux_module.demux_instance_embedding"], h)))
    for j in range(2, cfg["num_hidden_demux_layers"]):
        a = _gelu(_linear(sd, f"demux_module.dense_{j}", a)) + a
    pre = _gelu(_linear(sd, "demultiplexer.pre_decoder", a))
    return _layer_norm(sd, "demultiplexer.pre_decoder_layer_norm", pre, eps) + a


def _decoder(sd, cfg, name, x):
    tied = name + ".weight" not in sd
    weight = sd[_backbone(cfg) + ".embeddings.word_embeddings.weight"] if tied else sd[name + ".weight"]
    return F.linear(x, weight, sd[name + ".bias"])


def rsa_retrieval(sd, cfg, h):
    """§3.3 retrieval path: LayerNorms used, no residuals."""
    eps = cfg["layer_norm_eps"]
    a = _concat(sd["demux_module.demux_instance_embedding"], h)
    a = _layer_norm(sd, "demux_module.layer_norm_1", _gelu(_linear(sd, "demux_module.dense_1", a)), eps)
    for j in range(2, cfg["num_hidden_demux_layers"]):
        a = _layer_norm(sd, f"demux_module.layer_norm_{j}", _gelu(_linear(sd, f"demux_module.dense_{j}", a)), eps)
    pre = _gelu(_linear(sd, "retrieval_head.pre_decoder", a))
    a = _layer_norm(sd, "retrieval_head.pre_decoder_layer_norm", pre, eps)
    return _decoder(sd, cfg, "retrieval_head.decoder", a)


def index_demux(sd, cfg, name, h):
    """§3.1: ``LN(GELU(W [h_i ; h_t] + b))`` with ``h_i`` the state of prefix slot i, at every position."""
    N = cfg["num_instances"]
    z = _gelu(_linear(sd, name + ".dense", _concat(h[:, :N], h)))
    return _layer_norm(sd, name + ".layer_norm", z, cfg["layer_norm_eps"])


def add_prefix(cfg, ids, mask):
    """§3.1 prefix: slots 0..N-1 = fill except slot i = first - i; slot N = [CLS]."""
    N = cfg["num_instances"]
    B = ids.shape[0]
    rows = []
    for b in range(B):
        i = b % N
        prefix = [cfg["index_prefix_fill_id"]] * N + [cfg["index_prefix_cls_id"]]
        prefix[i] = cfg["index_prefix_first_instance_id"] - i
        rows.append(prefix)
    prefix = torch.tensor(rows, dtype=ids.dtype)
    ids = torch.cat([prefix, ids], dim=1)
    if mask is not None:
        mask = torch.cat([torch.ones_like(prefix), mask], dim=1)
    return ids, mask


def encode(sd, cfg, task, ids, mask=None, token_type_ids=None):
    """§4.1: returns the encoder output, ``(B, L, d)`` for N = 1, ``(G, L', d)`` multiplexed."""
    N = cfg["num_instances"]
    if N == 1:
        return encoder(sd, cfg, embed(sd, cfg, ids, token_type_ids), mask)
    assert ids.shape[0] % N == 0, "the reference pads ragged batches itself"
    if task != "masked_lm":
        token_type_ids = None  # §2.1: classification forwards drop segment ids
    if cfg["demuxing_variant"] == "index_pos":
        ids = ids.clone()
        ids[:, 0] = cfg["cls_token_id"]
    else:
        L = ids.shape[1]
        ids, mask = add_prefix(cfg, ids, mask)
        if token_type_ids is not None:
            token_type_ids = torch.cat([torch.zeros_like(ids[:, : N + 1]), token_type_ids], dim=1)
        if task == "masked_lm":  # pre-training keeps length L: the last N+1 tokens are cut
            ids, mask = ids[:, :L], None if mask is None else mask[:, :L]
            token_type_ids = None if token_type_ids is None else token_type_ids[:, :L]
    E = embed(sd, cfg, ids, token_type_ids)
    M = multiplex(sd, cfg, E, mask, seq_cls=task == "sequence_classification")
    return encoder(sd, cfg, embed(sd, cfg, inputs_embeds=M), None)  # no attention mask (§2.1 step 4)


def forward(sd, cfg, task, ids, mask=None, token_type_ids=None):
    """Logits as the reference returns them: ``index`` token tasks include the N+1 prefix positions."""
    N = cfg["num_instances"]
    h = encode(sd, cfg, task, ids, mask, token_type_ids)
    backbone = _backbone(cfg)
    if N == 1:
        if task == "sequence_classification":
            pooled = torch.tanh(_linear(sd, f"{backbone}.pooler.dense", h[:, 0]))
            return _linear(sd, "classifier", pooled)
        if task == "token_classification":
            return _linear(sd, "classifier", h)
        t = _layer_norm(sd, "cls.predictions.transform.LayerNorm",
                        _gelu(_linear(sd, "cls.predictions.transform.dense", h)), cfg["layer_norm_eps"])
        return _decoder(sd, cfg, "cls.predictions.decoder", t)
    G = h.shape[0]
    datamux = cfg["model_type"] == "roberta"
    if cfg["demuxing_variant"] == "index_pos":
        if task == "sequence_classification":
            return _linear(sd, "classifier", rsa_task(sd, cfg, h[:, :1]).reshape(G * N, -1))
        if task == "token_classification":
            return _linear(sd, "classifier", rsa_task(sd, cfg, h).flatten(0, 1))
        return rsa_retrieval(sd, cfg, h).flatten(0, 1)
    if task == "masked_lm":
        u = index_demux(sd, cfg, "retrieval_head", h)
        return _decoder(sd, cfg, "retrieval_head.decoder", u).flatten(0, 1)
    u = index_demux(sd, cfg, "demultiplexer", h).flatten(0, 1)  # all L+N+1 positions, as the reference
    if task == "sequence_classification":
        u = u[:, N]
        if datamux:
            hidden = _gelu(_linear(sd, "demultiplexer.dense_before_out_proj", u))
            return _linear(sd, "demultiplexer.out_proj", hidden)
        return _linear(sd, "classifier", u)
    if datamux:
        return F.linear(u, sd["demultiplexer.decoder.weight"], sd["demultiplexer.decoder.bias"])
    return _linear(sd, "classifier", u)


def retrieval_logits(sd, cfg, h):
    """The retrieval head at every (instance, position): ``(G, N, L', V)``."""
    if cfg["demuxing_variant"] == "index_pos":
        return rsa_retrieval(sd, cfg, h)
    return _decoder(sd, cfg, "retrieval_head.decoder", index_demux(sd, cfg, "retrieval_head", h))
