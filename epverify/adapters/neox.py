"""GPT-NeoX (GPTNeoXForCausalLM; Pythia)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EpverifyError
from .hf import HeadWeights, HFAdapter, RotaryMixin, heads_last, linear_out_heads
from .registry import Family, Sizes


class GPTNeoXAdapter(RotaryMixin, HFAdapter):
    """GPTNeoXForCausalLM: LayerNorm, fused per-head [q, k, v] projection, partial RoPE, parallel residual."""

    family = "gpt_neox"
    embed_names = ("embeds",)

    def __init__(self, model: nn.Module):
        super().__init__(model)
        c = self.config
        self.n_layers = c.num_hidden_layers
        self.n_heads = self.n_kv_heads = c.num_attention_heads
        self.d_model = c.hidden_size
        self.head_dim = c.hidden_size // c.num_attention_heads
        self.parallel_mlp = bool(c.use_parallel_residual)
        self.layers = model.gpt_neox.layers
        self.rotary_emb = model.gpt_neox.rotary_emb
        from transformers.models.gpt_neox.modeling_gpt_neox import (
            apply_rotary_pos_emb,  # handles partial rotary
        )

        self.apply_rotary = apply_rotary_pos_emb

    def _check_config(self) -> None:
        c = self.config
        if c.hidden_size % c.num_attention_heads:
            raise EpverifyError(
                f"GPT-NeoX config has hidden_size {c.hidden_size},"
                f" not divisible by its {c.num_attention_heads} heads"
            )

    def _final_norm(self):
        return self.model.gpt_neox.final_layer_norm

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (1, B, T, d): the token embeddings (positions enter through RoPE)."""
        return self.model.gpt_neox.embed_in(input_ids)[None]

    def head_weights(self, layer: int) -> HeadWeights:
        attn = self.layers[layer].attention
        h, e = self.n_heads, self.head_dim
        # query_key_value: d -> 3d with output features laid out per head as [q (e), k (e), v (e)]
        w = attn.query_key_value.weight.view(h, 3, e, -1)  # (H, 3, e, d)
        b = attn.query_key_value.bias
        b = None if b is None else b.view(h, 3, e)
        q, k, v = w[:, 0], w[:, 1], w[:, 2]
        qb, kb, vb = (None, None, None) if b is None else (b[:, 0], b[:, 1], b[:, 2])
        return HeadWeights(q, k, v, qb, kb, vb, linear_out_heads(attn.dense, h, e))

    def _qkv_shared(self, layer, x):
        qkv = self.layers[layer].attention.query_key_value(x)  # (B, T, 3d)
        qkv = heads_last(qkv, self.n_heads, 3 * self.head_dim)  # (B, H, T, 3e)
        return qkv.chunk(3, dim=-1)

    def _out_proj_no_bias(self, layer, a):
        return F.linear(a, self.layers[layer].attention.dense.weight)

    def attention_bias(self, layer: int) -> torch.Tensor | None:
        return self.layers[layer].attention.dense.bias


def _config(s: Sizes, **options):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(num_hidden_layers=s.n_layers, num_attention_heads=s.n_heads, hidden_size=s.d_model,
                         intermediate_size=s.d_mlp, vocab_size=s.vocab, tie_word_embeddings=s.tied,
                         max_position_embeddings=128, bos_token_id=0, eos_token_id=0, attn_implementation="eager",
                         **options)


def _options(draw, s: Sizes) -> dict:
    from hypothesis import strategies as st

    return {"rotary_pct": draw(st.sampled_from([0.25, 0.5, 1.0])),
            "rotary_emb_base": draw(st.sampled_from([10000.0, 100.0])),
            "use_parallel_residual": draw(st.booleans()), "attention_bias": draw(st.booleans())}


def _shape(c):
    from ..scale.memory import standard_shape

    return standard_shape(c, gated_mlp=False, parallel_mlp=bool(getattr(c, "use_parallel_residual", True)))


FAMILIES = (Family("gpt_neox", ("gpt_neox",), GPTNeoXAdapter, "GPTNeoXLayer", _config, _options, _shape,
                   grouped_kv=False, free_width=False, notes="GPT-NeoX, Pythia (parallel residual)"),)
