"""Gemma (GemmaForCausalLM), Gemma 2 (Gemma2ForCausalLM) and Gemma 3's text model (Gemma3ForCausalLM).

All three: Llama's projections, RMS norms that scale by (1 + weight), token embeddings scaled by sqrt(d_model)
(inside the embedding module, so `embed` needs nothing extra) and a GELU-gated MLP. Gemma 2 and 3 add post-norms
after the summed attention output and after the MLP (Hugging Face's `post_attention_layernorm` is that
post-norm here, not the MLP's pre-norm), attention scaled by query_pre_attn_scalar, and sliding-window layers.
Gemma 2 soft-caps attention scores and final logits; Gemma 3 norms each head's queries and keys and rotates
its local (sliding) and global layers with their own RoPE settings.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import EpverifyError
from .llama import LlamaAdapter
from .registry import Family, Sizes, draw_rope, draw_window, hf_config


class GemmaAdapter(LlamaAdapter):
    """GemmaForCausalLM: Llama's layout, (1 + weight) RMS norms, scaled embeddings, GELU-gated MLP."""

    family = "gemma"
    rotary_module = "gemma"

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (1, B, T, d): token embeddings times sqrt(d_model). transformers >= 5.5 scales inside the
        embedding module (it has `embed_scale`); earlier versions scaled in the model's forward, in the
        embeddings' dtype, which this reproduces."""
        module = self.model.model.embed_tokens
        x = module(input_ids)
        if not hasattr(module, "embed_scale"):
            x = x * torch.tensor(self.d_model**0.5, dtype=x.dtype)
        return x[None]

    def _post_norm_gain(self, norm: nn.Module):
        return 1.0 + norm.weight.float()


class Gemma2Adapter(GemmaAdapter):
    """Gemma2ForCausalLM: Gemma with post-norms, query_pre_attn_scalar, soft-capping, alternating windows."""

    family = "gemma2"
    rotary_module = "gemma2"
    mlp_norm_name = "pre_feedforward_layernorm"
    attn_post_norm_name = "post_attention_layernorm"
    mlp_post_norm_name = "post_feedforward_layernorm"

    def _scale(self, layer: int) -> float:
        return float(self.config.query_pre_attn_scalar) ** -0.5


class Gemma3Adapter(Gemma2Adapter):
    """Gemma3ForCausalLM (text): Gemma 2's blocks with per-head q/k norms and per-layer-type RoPE."""

    family = "gemma3_text"
    rotary_module = "gemma3"
    head_norms = True

    def _check_config(self) -> None:
        super()._check_config()
        if getattr(self.config, "use_bidirectional_attention", False):
            raise EpverifyError("Gemma 3 with use_bidirectional_attention=True is not a causal LM: edge pruning "
                                "here needs causal attention; load a config with use_bidirectional_attention=False")

    def _softcap(self) -> None:
        return None  # Gemma 3's config carries attn_logit_softcapping, but its attention does not apply it

    def _cos_sin(self, layer, q, positions):
        return self.rotary_emb(q, positions, self.config.layer_types[layer])


def _gemma2_options(draw, s: Sizes) -> dict:
    from hypothesis import strategies as st

    return {**draw_rope(draw), **draw_window(draw, s),
            "query_pre_attn_scalar": draw(st.sampled_from([s.head_dim, 7])),
            "attn_logit_softcapping": draw(st.sampled_from([None, 2.0, 50.0])),
            "final_logit_softcapping": draw(st.sampled_from([None, 3.0, 30.0]))}


def _gemma3_options(draw, s: Sizes) -> dict:
    from hypothesis import strategies as st

    theta = draw(st.sampled_from([37.0, 10000.0]))
    rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
            "full_attention": {"rope_type": "default", "rope_theta": theta}}
    return {**draw_window(draw, s), "rope_parameters": rope,
            "query_pre_attn_scalar": draw(st.sampled_from([s.head_dim, 7])),
            "attn_logit_softcapping": draw(st.sampled_from([None, 2.0])),
            "final_logit_softcapping": draw(st.sampled_from([None, 3.0]))}


FAMILIES = (
    Family("gemma", ("gemma",), GemmaAdapter, "GemmaDecoderLayer", lambda s, **o: hf_config("GemmaConfig", s, **o),
           lambda draw, s: draw_rope(draw), notes="Gemma (scaled embeddings, (1 + w) norms, GeGLU)"),
    Family("gemma2", ("gemma2",), Gemma2Adapter, "Gemma2DecoderLayer",
           lambda s, **o: hf_config("Gemma2Config", s, **o), _gemma2_options,
           notes="Gemma 2 (post-norms, soft-capping, alternating sliding windows)"),
    Family("gemma3_text", ("gemma3_text",), Gemma3Adapter, "Gemma3DecoderLayer",
           lambda s, **o: hf_config("Gemma3TextConfig", s, **o), _gemma3_options,
           notes="Gemma 3 text (per-head q/k norms, local and global RoPE)"),
)
