"""GPT-2 (GPT2LMHeadModel)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import EpverifyError
from .hf import HeadWeights, HFAdapter, heads_last
from .registry import Family, Sizes


class GPT2Adapter(HFAdapter):
    """GPT2LMHeadModel: learned positions, LayerNorm, fused Conv1D c_attn (d -> 3d, columns [q | k | v])."""

    family = "gpt2"
    attn_norm_name, mlp_norm_name = "ln_1", "ln_2"
    embed_names = ("tok_embeds", "pos_embeds")

    def __init__(self, model: nn.Module):
        super().__init__(model)
        c = self.config
        self.n_layers, self.n_heads = c.n_layer, c.n_head
        self.n_kv_heads = c.n_head
        self.d_model = c.n_embd
        self.head_dim = c.n_embd // c.n_head
        self.layers = model.transformer.h

    def _check_config(self) -> None:
        c = self.config
        if c.n_embd % c.n_head:
            raise EpverifyError(f"GPT-2 config has n_embd {c.n_embd} not divisible by n_head {c.n_head}")

    def _final_norm(self):
        return self.model.transformer.ln_f

    def _scale(self, layer: int) -> float:
        # GPT2Attention: 1/sqrt(e) if scale_attn_weights, further divided by (layer + 1) if
        # scale_attn_by_inverse_layer_idx
        scale = self.head_dim**-0.5 if self.config.scale_attn_weights else 1.0
        if self.config.scale_attn_by_inverse_layer_idx:
            scale /= float(layer + 1)
        return scale

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (2, B, T, d): token embeddings, position embeddings (positions 0..T-1)."""
        t = self.model.transformer
        tok = t.wte(input_ids)
        pos = t.wpe(torch.arange(input_ids.shape[1], device=input_ids.device))[None].expand_as(tok)
        return torch.stack([tok, pos])

    def head_weights(self, layer: int) -> HeadWeights:
        attn = self.layers[layer].attn
        h, e, d = self.n_heads, self.head_dim, self.d_model
        w, b = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: (d, 3d), x @ w + b

        def part(i: int):
            cols = w[:, i * d : (i + 1) * d]  # (d, H*e)
            return cols.view(d, h, e).permute(1, 2, 0), b[i * d : (i + 1) * d].view(h, e)

        (q, qb), (k, kb), (v, vb) = part(0), part(1), part(2)
        return HeadWeights(q, k, v, qb, kb, vb, attn.c_proj.weight.view(h, e, d))

    def _qkv_shared(self, layer, x):
        q, k, v = self.layers[layer].attn.c_attn(x).split(self.d_model, dim=-1)
        h, e = self.n_heads, self.head_dim
        return heads_last(q, h, e), heads_last(k, h, e), heads_last(v, h, e)

    def _out_proj_no_bias(self, layer, a):
        return a @ self.layers[layer].attn.c_proj.weight

    def attention_bias(self, layer: int) -> torch.Tensor | None:
        return self.layers[layer].attn.c_proj.bias


def _config(s: Sizes, **options):
    from transformers import GPT2Config

    return GPT2Config(n_layer=s.n_layers, n_head=s.n_heads, n_embd=s.d_model, n_inner=s.d_mlp, vocab_size=s.vocab,
                      tie_word_embeddings=s.tied, n_positions=128, bos_token_id=0, eos_token_id=0,
                      attn_implementation="eager", **options)


def _options(draw, s: Sizes) -> dict:
    from hypothesis import strategies as st

    return {"scale_attn_weights": draw(st.booleans()), "scale_attn_by_inverse_layer_idx": draw(st.booleans())}


def _shape(c):
    from ..scale.memory import Shape

    return Shape(c.n_layer, c.n_head, c.n_head, c.n_embd, c.n_embd // c.n_head, c.n_inner or 4 * c.n_embd,
                 c.vocab_size, n_embeds=2, gated_mlp=False, tied=True)


FAMILIES = (Family("gpt2", ("gpt2",), GPT2Adapter, "GPT2Block", _config, _options, _shape, grouped_kv=False,
                   free_width=False, rotary=False, notes="GPT-2 (learned positions, LayerNorm)"),)
