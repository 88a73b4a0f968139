"""What the engine needs to know about a model family: how each layer computes, split per head.

An adapter is a thin view over the user's own model (its weights, no copies). It never decides which writer feeds
which reader: the engine does that. It answers, for one layer at a time:

- `embed(ids)`: the outputs of the embedding writers, stacked (E, B, T, d);
- `attention_qkv(layer, q_in, k_in, v_in)`: queries, keys and values from per-reader residual inputs, each head
  through its own copy of the layer norm; an input with a leading dimension of 1 is shared by every head;
- `attention(layer, q, k, v, attention_mask)`: the per-head attention outputs before the output projection;
- `head_writes(layer, a)`: what each head writes into the residual (output projection, no bias);
- `attention_bias(layer)`: the output projection's bias, a constant the engine adds to the residual;
- `mlp(layer, x)`: the MLP writer's output for residual input x (norm included);
- `unembed(x)`: logits from the final residual (final norm included).

Preconditions: what a model must satisfy for the per-head split to be exact (the equivalence property checks
every registered family against them):
- the residual stream is the sum of the embedding writers' outputs, every head's write, every MLP's output and
  constant biases (`attention_bias`); nothing else writes to it;
- a head's query, key and value depend only on that head's own residual input (through norms, a projection, a
  per-head norm, the position encoding); under grouped KV heads, a KV head's key and value on its own input;
- a head's write is linear in what `attention` returns for it (`head_writes`): a norm after the summed heads is
  folded into `attention` and `head_out_weight` with the run's own statistic (docs/method.md);
- an MLP sees only its own residual input (norms included), and the unembedding only the final residual;
- attention is causal (or, for Tracr's non-causal programs, full), so positions never mix otherwise.

A Hugging Face family declares itself in the registry (`registry.py`) and builds on `hf.HFAdapter`.
"""

from __future__ import annotations

from functools import cached_property

import torch

from ..core.graph import ComponentGraph


class Adapter:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    head_dim: int
    embed_names: tuple[str, ...]
    parallel_mlp: bool = False
    # "distribution": logits over a vocabulary, compared by KL; "numerical": one value, compared by squared error.
    output_kind: str = "distribution"
    # Outputs are multiplied by this before the loss: 1 for language models; Tracr's 0/1 output directions are
    # read at a low temperature so that a wrong output costs several nats (see docs/recovery.md).
    output_scale: float = 1.0

    @cached_property
    def graph(self) -> ComponentGraph:
        return ComponentGraph(self.n_layers, self.n_heads, self.n_kv_heads, tuple(self.embed_names), self.parallel_mlp)

    @property
    def dtype(self) -> torch.dtype:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project(self, layer: int, kind: str, x: torch.Tensor, heads: slice) -> torch.Tensor:
        """Queries, keys or values (`kind` "q", "k", "v") of heads `heads` from their own residual inputs
        x (n or 1, B, T, d), each through its own copy of the layer norm: (B, n, T, head_dim), before positions."""
        raise NotImplementedError

    def position(self, layer: int, q: torch.Tensor, k: torch.Tensor):
        """Position encoding applied to all queries and keys (B, H, T, e); identity unless the family rotates."""
        return q, k

    def attention_qkv(self, layer: int, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor):
        """q (B, H, T, e), k and v (B, Hkv, T, e) from per-reader inputs (leading dimension H / Hkv, or 1)."""
        every_q, every_kv = slice(0, self.n_heads), slice(0, self.n_kv_heads)
        q = self.project(layer, "q", q_in, every_q)
        k = self.project(layer, "k", k_in, every_kv)
        v = self.project(layer, "v", v_in, every_kv)
        q, k = self.position(layer, q, k)
        return q, k, v

    def attention(self, layer, q, k, v, attention_mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def silent(self, layer: int) -> bool:
        """Whether every head of the layer outputs exactly 0 whatever it reads (no value weights, no biases: Tracr's
        layout filler); runs (plain, masked, the oracle) then skip reading and attending the layer."""
        return False

    def head_out_weight(self, layer: int) -> torch.Tensor:
        """Each head's slice of the output projection, (H, head_dim, d): head h writes a[:, h] @ W[h]."""
        raise NotImplementedError

    def head_writes(self, layer: int, a: torch.Tensor) -> torch.Tensor:
        """What each head writes into the residual (H, B, T, d) for head outputs a (B, H, T, head_dim)."""
        return torch.einsum("bhte,hed->hbtd", a, self.head_out_weight(layer))

    def head_write_sum(self, layer: int, a: torch.Tensor) -> torch.Tensor:
        """Sum of every head's write (B, T, d): the plain output projection, used by unmasked runs."""
        return self.head_writes(layer, a).sum(0)

    def attention_bias(self, layer: int) -> torch.Tensor | None:
        return None

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decide(self, outputs: torch.Tensor) -> torch.Tensor:
        """The model's decision per output row (..., V) -> (...): the argmax token for a language model."""
        return outputs.argmax(-1)

    def summary(self) -> dict:
        """What a circuit file records about the model it was found in."""
        return {"family": type(self).__name__, **self.graph.summary(), "d_model": self.d_model}


NARROW_HEAD = 16  # head_dim up to which no-grad per-head projections take the transposed product


def project_heads(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Per-head projection of per-head inputs.

    x: (H or 1, B, T, d) residual inputs, one per head (a leading 1 is shared by all heads);
    weight: (H, d, e); bias: (H, e) or None. Returns (B, H, T, e).
    """
    if x.shape[0] == 1:
        out = torch.einsum("btd,hde->bhte", x[0], weight)
    elif weight.shape[-1] <= NARROW_HEAD and not (torch.is_grad_enabled() and x.requires_grad):
        # Narrow heads (Tracr's key sizes) in no-grad runs: CPU GEMMs with a handful of output columns are several
        # times slower than the transposed product (H, e, d) @ (H, d, B*T), so take that and view it back.
        h, b, t, d = x.shape
        out = torch.bmm(weight.transpose(1, 2), x.reshape(h, b * t, d).transpose(1, 2))  # (H, e, B*T)
        out = out.view(h, -1, b, t).permute(2, 0, 3, 1)  # (B, H, T, e), a view
    else:
        out = torch.einsum("hbtd,hde->bhte", x, weight)
    if bias is not None:
        out = out + bias[None, :, None, :]
    return out


def causal_softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attention_mask: torch.Tensor | None,
    causal: bool,
    scale: float,
    window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Softmax attention with grouped KV heads and key padding. q (B,H,T,e), k/v (B,Hkv,T,e) -> (B,H,T,e).

    window: a query at position i sees keys i - window + 1 .. i only (sliding-window layers), as Hugging Face's
    masks do; softcap: scores pass through cap * tanh(score / cap) before the mask (Gemma 2's soft-capping)."""
    n_heads, n_kv = q.shape[1], k.shape[1]
    if n_kv != n_heads:
        k = k.repeat_interleave(n_heads // n_kv, dim=1)
        v = v.repeat_interleave(n_heads // n_kv, dim=1)
    t = q.shape[2]
    allowed = torch.ones(t, t, dtype=torch.bool, device=q.device)
    if causal:
        allowed = torch.tril(allowed)
    if window is not None:
        allowed = torch.triu(allowed, diagonal=1 - window)
    allowed = allowed[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    scores = torch.einsum("bhqe,bhke->bhqk", q, k) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores.float(), dim=-1).to(v.dtype)
    return torch.einsum("bhqk,bhke->bhqe", weights, v)
