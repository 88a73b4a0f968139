"""Phi-3 (Phi3ForCausalLM): Llama's blocks with a fused q/k/v projection and a fused gate/up MLP projection."""

from __future__ import annotations

import torch

from .hf import HeadWeights, heads_last, linear_out_heads
from .llama import LlamaAdapter
from .registry import ROPES, Family, Sizes, hf_config


class Phi3Adapter(LlamaAdapter):
    """Phi3ForCausalLM: `qkv_proj` (d -> (H + 2 Hkv) e, rows [q | k | v]), partial RoPE, a sliding window on every
    layer when `sliding_window` is set. The fused MLP runs as the model's own module."""

    family = "phi3"
    rotary_module = "phi3"

    def head_weights(self, layer: int) -> HeadWeights:
        attn = self.layers[layer].self_attn
        h, kv, e = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = attn.qkv_proj.weight.split([h * e, kv * e, kv * e])
        return HeadWeights(q.view(h, e, -1), k.view(kv, e, -1), v.view(kv, e, -1), None, None, None,
                           linear_out_heads(attn.o_proj, h, e))

    def _qkv_shared(self, layer, x):
        h, kv, e = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.layers[layer].self_attn.qkv_proj(x).split([h * e, kv * e, kv * e], dim=-1)
        return heads_last(q, h, e), heads_last(k, kv, e), heads_last(v, kv, e)

    def attention_bias(self, layer: int) -> torch.Tensor | None:
        return self.layers[layer].self_attn.o_proj.bias


def _options(draw, s: Sizes) -> dict:
    from hypothesis import strategies as st

    rope = dict(draw(st.sampled_from(ROPES[:2])))  # Phi-3 takes default or longrope scaling only
    rope["partial_rotary_factor"] = draw(st.sampled_from([0.5, 1.0]))
    return {"rope_parameters": rope, "sliding_window": draw(st.sampled_from([None, 1, 2, 3]))}


FAMILIES = (Family("phi3", ("phi3",), Phi3Adapter, "Phi3DecoderLayer", lambda s, **o: hf_config("Phi3Config", s, **o),
                   _options, notes="Phi-3 (fused qkv and gate_up projections)"),)
