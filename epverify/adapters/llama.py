"""Llama and CodeLlama (LlamaForCausalLM), and Qwen2 (Qwen2ForCausalLM), which shares their layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EpverifyError
from .hf import HeadWeights, HFAdapter, RotaryMixin, heads_last, linear_in_heads, linear_out_heads


class LlamaAdapter(RotaryMixin, HFAdapter):
    """LlamaForCausalLM (CodeLlama too): RMSNorm, q/k/v/o projections, grouped-query attention, RoPE."""

    family = "llama"
    embed_names = ("embeds",)

    def __init__(self, model: nn.Module):
        super().__init__(model)
        c = self.config
        self.n_layers = c.num_hidden_layers
        self.n_heads = c.num_attention_heads
        self.n_kv_heads = c.num_key_value_heads or c.num_attention_heads
        self.d_model = c.hidden_size
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.layers = model.model.layers
        self.rotary_emb = model.model.rotary_emb
        self.apply_rotary = self._rotary_function()

    @staticmethod
    def _rotary_function():
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        return apply_rotary_pos_emb

    def _check_config(self) -> None:
        c = self.config
        kv = c.num_key_value_heads or c.num_attention_heads
        if c.num_attention_heads % kv:
            raise EpverifyError(
                f"{self.family} config has {c.num_attention_heads} heads:"
                f" not a multiple of its {kv} key/value heads"
            )

    def _final_norm(self):
        return self.model.model.norm

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (1, B, T, d): the token embeddings (positions enter through RoPE)."""
        return self.model.model.embed_tokens(input_ids)[None]

    def head_weights(self, layer: int) -> HeadWeights:
        attn = self.layers[layer].self_attn
        h, kv, e = self.n_heads, self.n_kv_heads, self.head_dim
        q, qb = linear_in_heads(attn.q_proj, h, e)
        k, kb = linear_in_heads(attn.k_proj, kv, e)
        v, vb = linear_in_heads(attn.v_proj, kv, e)
        return HeadWeights(q, k, v, qb, kb, vb, linear_out_heads(attn.o_proj, h, e))

    def _qkv_shared(self, layer, x):
        attn = self.layers[layer].self_attn
        h, kv, e = self.n_heads, self.n_kv_heads, self.head_dim
        return (
            heads_last(attn.q_proj(x), h, e),
            heads_last(attn.k_proj(x), kv, e),
            heads_last(attn.v_proj(x), kv, e),
        )

    def _out_proj_no_bias(self, layer, a):
        return F.linear(a, self.layers[layer].self_attn.o_proj.weight)

    def attention_bias(self, layer: int) -> torch.Tensor | None:
        return self.layers[layer].self_attn.o_proj.bias


class Qwen2Adapter(LlamaAdapter):
    """Qwen2ForCausalLM: Llama's layout with q/k/v biases (read from the modules, so nothing else changes)."""

    family = "qwen2"

    @staticmethod
    def _rotary_function():
        from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

        return apply_rotary_pos_emb

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.layer_types = list(
            getattr(self.config, "layer_types", None) or ["full_attention"] * self.n_layers
        )
        self.sliding_window = getattr(self.config, "sliding_window", None)

    def attention(self, layer, q, k, v, attention_mask):
        # Sliding-window layers equal full causal attention while the sequence fits the window.
        window = self.sliding_window
        if self.layer_types[layer] == "sliding_attention" and window is not None and q.shape[2] > window:
            raise EpverifyError(
                f"Qwen2 sliding-window attention (window {window}) on inputs of length {q.shape[2]} is not "
                "supported: use inputs no longer than the window or a config with use_sliding_window=False"
            )
        return super().attention(layer, q, k, v, attention_mask)
