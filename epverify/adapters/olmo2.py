"""OLMo 2 (Olmo2ForCausalLM): post-norms only, and q/k norms over the whole projection of all heads.

A block is x + post_norm(attention(x)), then x + post_norm(mlp(x)): no pre-norm, so each head reads its raw
residual input. The query norm spans every head's queries (H * head_dim features), so head h's query is slice h
of q_norm(W_q x_h) for its own input x_h: a full query projection per head (keys likewise over the KV heads), at
H times the projection's cost and memory in masked runs (docs/method.md; the memory estimate counts it).
"""

from __future__ import annotations

import torch

from .hf import heads_last
from .llama import LlamaAdapter
from .registry import Family, draw_rope, hf_config


class Olmo2Adapter(LlamaAdapter):
    family = "olmo2"
    rotary_module = "olmo2"
    attn_norm_name = None
    mlp_norm_name = None
    attn_post_norm_name = "post_attention_layernorm"
    mlp_post_norm_name = "post_feedforward_layernorm"

    def project(self, layer: int, kind: str, x: torch.Tensor, heads: slice) -> torch.Tensor:
        """Queries/keys of heads `heads` from their own inputs x (n or 1, B, T, d): each head's input projected in
        full and normed over all heads, then that head's slice kept. Values have no norm: Llama's path."""
        if kind == "v":
            return super().project(layer, kind, x, heads)
        attn = self.layers[layer].self_attn
        proj, norm = (attn.q_proj, attn.q_norm) if kind == "q" else (attn.k_proj, attn.k_norm)
        n = self.n_heads if kind == "q" else self.n_kv_heads
        full = norm(proj(x))  # (n or 1, B, T, n_all * e)
        full = full.view(*full.shape[:3], n, self.head_dim)[..., heads, :]  # (n or 1, B, T, len(heads), e)
        if full.shape[0] == 1:
            return full[0].permute(0, 2, 1, 3)  # one shared input: every head's slice of one projection
        own = torch.diagonal(full, dim1=0, dim2=3)  # (B, T, e, len(heads)): head i's slice of its own input
        return own.permute(0, 3, 1, 2)

    def _qkv_shared(self, layer, x):
        attn = self.layers[layer].self_attn
        h, kv, e = self.n_heads, self.n_kv_heads, self.head_dim
        return (heads_last(attn.q_norm(attn.q_proj(x)), h, e), heads_last(attn.k_norm(attn.k_proj(x)), kv, e),
                heads_last(attn.v_proj(x), kv, e))


def _shape(c):
    from ..scale.memory import standard_shape

    return standard_shape(c, full_qk_norm=True)


FAMILIES = (Family("olmo2", ("olmo2",), Olmo2Adapter, "Olmo2DecoderLayer",
                   lambda s, **o: hf_config("Olmo2Config", s, **o), lambda draw, s: draw_rope(draw), _shape,
                   notes="OLMo 2 (post-norms only, q/k norms over all heads)"),)
