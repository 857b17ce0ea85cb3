"""Plain-torch reference of every ``torch.ops.mux`` op: the executable spec.

Written straight from SPEC.md (§2.1, §2.2, §2.3, §3) with no custom ops. Tests compare every kernel
(C++ CPU, Triton) against these functions; benchmarks use them as the eager and compiled baselines.
Math runs in fp32 (as the kernels accumulate; fp64 stays fp64) and the result is cast back to the
input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _acc(t):
    """The accumulation dtype of the kernels: fp32 for fp32/fp16/bf16, fp64 for fp64."""
    return None if t is None else (t if t.dtype == torch.float64 else t.float())


def multiplex(x: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """Gaussian-projection mix of the N instances of each group.

    ``x (G, N, L, d)``; ``weight (N, d)``: ``out = scale * sum_i x[:, i] * weight[i]`` (Hadamard);
    ``weight (N, d, d)``: ``out = scale * sum_i x[:, i] @ weight[i]`` (orthogonal). Returns ``(G, L, d)``.
    """
    xf, wf = _acc(x), _acc(weight)
    if weight.dim() == 2:
        out = (xf * wf[None, :, None, :]).sum(dim=1)
    else:
        out = torch.einsum("gnld,nde->gle", xf, wf)
    return (out * scale).to(x.dtype)


def embed(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, eps):
    """The BERT embedding block without dropout: ``LN(word[ids] + pos[0:L] + type[tt])``."""
    L = ids.shape[-1]
    tt = torch.zeros_like(ids) if token_type_ids is None else token_type_ids
    e = _acc(word)[ids] + _acc(pos)[:L] + _acc(type_)[tt]
    return F.layer_norm(e, e.shape[-1:], _acc(ln_weight), _acc(ln_bias), eps)


def multiplex_embeddings(
    ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight, scale, eps
) -> torch.Tensor:
    """The reference path from token ids ``(G, N, L)`` to the encoder input ``(G, L, d)``.

    Embed every instance (SPEC §2.1 step 1), mix with the Hadamard vectors (§2.2), then run the
    embedding block again on the mix with token type 0 (§2.1 step 3), as HF ``BertModel`` does
    with ``inputs_embeds``.
    """
    e = embed(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, eps)  # (G, N, L, d)
    m = multiplex(e, _acc(weight), scale)  # (G, L, d)
    L = ids.shape[-1]
    second = m + _acc(pos)[:L] + _acc(type_)[0]
    out = F.layer_norm(second, second.shape[-1:], _acc(ln_weight), _acc(ln_bias), eps)
    return out.to(word.dtype)


def demultiplex(h, keys, weight, bias=None, ln_weight=None, ln_bias=None, eps=1e-12) -> torch.Tensor:
    """Index-keyed demultiplexer, exactly as the reference code computes it: concat then Linear.

    ``h (G, L, d)``; ``keys (N, d)`` (RSA private keys) or ``(G, N, d)`` (index-prefix states);
    ``out[g, i, l] = LN(GELU(weight @ [key[g, i] ; h[g, l]] + bias))``. Returns ``(G, N, L, e)``.
    """
    G, L, d = h.shape
    N = keys.shape[-2]
    k = _acc(keys)
    k = k.expand(G, N, d) if k.dim() == 2 else k
    cat = torch.cat([k[:, :, None, :].expand(G, N, L, d), _acc(h)[:, None].expand(G, N, L, d)], dim=-1)
    z = F.linear(cat, _acc(weight), _acc(bias))
    a = F.gelu(z)
    if ln_weight is not None:
        a = F.layer_norm(a, a.shape[-1:], _acc(ln_weight), _acc(ln_bias), eps)
    return a.to(h.dtype)


def demultiplex_factorised(h, keys, weight, bias=None, ln_weight=None, ln_bias=None, eps=1e-12):
    """The same math with ``weight`` split into key and hidden halves (SPEC §7.2): no concat.

    A stronger plain-torch baseline for benchmarks: ``W_h h`` once per row, ``W_k key`` once per key.
    """
    G, L, d = h.shape
    w = _acc(weight)
    hidden = F.linear(_acc(h), w[:, d:])  # (G, L, e)
    key = F.linear(_acc(keys), w[:, :d], _acc(bias))  # (N|G·N, e)
    key = key.expand(G, *key.shape[-2:]) if key.dim() == 2 else key
    a = F.gelu(hidden[:, None] + key[:, :, None])
    if ln_weight is not None:
        a = F.layer_norm(a, a.shape[-1:], _acc(ln_weight), _acc(ln_bias), eps)
    return a.to(h.dtype)
