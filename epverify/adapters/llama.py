"""Llama and CodeLlama (LlamaForCausalLM), and the families that share its layout: Qwen2, Mistral, Qwen3."""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EpverifyError
from .hf import HeadWeights, HFAdapter, RotaryMixin, heads_last, linear_in_heads, linear_out_heads
from .registry import Family, Sizes, draw_rope, draw_window, hf_config


class LlamaAdapter(RotaryMixin, HFAdapter):
    """LlamaForCausalLM (CodeLlama too): RMSNorm, q/k/v/o projections, grouped-query attention, RoPE."""

    family = "llama"
    embed_names = ("embeds",)
    rotary_module = "llama"  # transformers.models.<this>.modeling_<this>.apply_rotary_pos_emb

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
        module = importlib.import_module(f"transformers.models.{self.rotary_module}.modeling_{self.rotary_module}")
        self.apply_rotary = module.apply_rotary_pos_emb

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
        """(B, T) -> (1, B, T, d): the token embeddings (positions enter through RoPE; Gemma's module scales)."""
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
    """Qwen2ForCausalLM (Qwen2.5 too): Llama's layout with q/k/v biases, sliding windows on the layers that
    `layer_types` marks."""

    family = "qwen2"
    rotary_module = "qwen2"


class MistralAdapter(LlamaAdapter):
    """MistralForCausalLM: Llama's layout, a sliding window on every layer when `sliding_window` is set."""

    family = "mistral"
    rotary_module = "mistral"


class Qwen3Adapter(LlamaAdapter):
    """Qwen3ForCausalLM: Qwen2's layout without q/k/v biases, with per-head RMS norms of queries and keys."""

    family = "qwen3"
    rotary_module = "qwen3"
    head_norms = True


def _llama_config(s: Sizes, **options):
    return hf_config("LlamaConfig", s, **options)


LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 4, "rope_theta": 500.0}


def _llama_options(draw, s: Sizes) -> dict:
    from hypothesis import strategies as st

    rope = draw(st.sampled_from([draw_rope(draw)["rope_parameters"], LLAMA3_ROPE,
                                 {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}]))
    return {"rope_parameters": dict(rope), "attention_bias": draw(st.booleans()), "mlp_bias": draw(st.booleans())}


def _windowed(draw, s: Sizes) -> dict:
    return {**draw_rope(draw), **draw_window(draw, s), "use_sliding_window": True}


def _mistral_options(draw, s: Sizes) -> dict:
    from hypothesis import strategies as st

    return {**draw_rope(draw), "sliding_window": draw(st.sampled_from([None, 1, 2, 3]))}


FAMILIES = (
    Family("llama", ("llama",), LlamaAdapter, "LlamaDecoderLayer", _llama_config, _llama_options,
           notes="Llama 1-3.x, CodeLlama (Llama 3 rope scaling included)"),
    Family("qwen2", ("qwen2",), Qwen2Adapter, "Qwen2DecoderLayer",
           lambda s, **o: hf_config("Qwen2Config", s, **o), _windowed,
           notes="Qwen2, Qwen2.5 (sliding-window layers included)"),
    Family("mistral", ("mistral",), MistralAdapter, "MistralDecoderLayer",
           lambda s, **o: hf_config("MistralConfig", s, **o), _mistral_options,
           notes="Mistral (sliding window)", defaults={"sliding_window": None}),
    Family("qwen3", ("qwen3",), Qwen3Adapter, "Qwen3DecoderLayer",
           lambda s, **o: hf_config("Qwen3Config", s, **o), _windowed,
           notes="Qwen3 dense (per-head q/k norms, sliding-window layers)"),
)
