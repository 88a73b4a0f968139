"""Adapters for Hugging Face causal language models: GPT-2, Llama (and CodeLlama), GPT-NeoX and Qwen2.

Each adapter is a view of the user's own model: it calls the model's own modules (layer norms, MLPs, rotary
embedding, lm_head) and reads per-head weights as reshaped views of the model's parameters, made on demand, so
wrapping copies nothing and works on meta tensors (the component graph needs only the config). The per-head
split is the only thing it adds: every head's query, key and value input goes through that head's own copy of
the layer norm (the model's norm module, broadcast over a leading head dimension), then through that head's
slice of the projection.

Weights are read in one layout for every family: (H, e, d) per head for the input projections (the head's e
output features from d residual features) and (H, e, d) for the output projection (the head's e features in,
d residual features out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EpverifyError
from .base import Adapter, causal_softmax_attention, project_heads


@dataclass
class HeadWeights:
    """Per-head views of one attention layer's weights (no copies)."""

    q: torch.Tensor  # (H, e, d)
    k: torch.Tensor  # (Hkv, e, d)
    v: torch.Tensor  # (Hkv, e, d)
    q_bias: torch.Tensor | None  # (H, e)
    k_bias: torch.Tensor | None  # (Hkv, e)
    v_bias: torch.Tensor | None  # (Hkv, e)
    o: torch.Tensor  # (H, e, d): head h writes a_h @ o[h]


def _linear_in_heads(linear: nn.Linear, n: int, e: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """nn.Linear(d -> n*e) as per-head views: weight (n, e, d), bias (n, e) or None."""
    bias = None if linear.bias is None else linear.bias.view(n, e)
    return linear.weight.view(n, e, -1), bias


def _linear_out_heads(linear: nn.Linear, n: int, e: int) -> torch.Tensor:
    """nn.Linear(n*e -> d) as per-head views (n, e, d): head h's slice of the input columns, transposed."""
    return linear.weight.view(-1, n, e).permute(1, 2, 0)


def _heads_last(x: torch.Tensor, n: int, e: int) -> torch.Tensor:
    """(B, T, n*e) -> (B, n, T, e)."""
    return x.view(*x.shape[:2], n, e).transpose(1, 2)


class HFAdapter(Adapter):
    """What the Hugging Face families share: pre-norm blocks, causal softmax attention, per-head projections.

    A family says where its modules are (`_attn_norm`, `_mlp_norm`, `_mlp_module`, `_final_norm`),
    gives per-head weight views (`head_weights`), the output projection's bias, the projection of a shared
    input with the model's own modules (`_qkv_shared`, the fast path of unmasked runs), and its position
    encoding.
    """

    family: str = "hf"

    def __init__(self, model: nn.Module):
        # Eval mode (dropout off) and frozen: only edge masks train, so backward passes never compute or store
        # gradients for the weights. Parameter values and storage are untouched.
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.config = model.config
        self._check_config()

    def _check_config(self) -> None:
        """Raise an EpverifyError for config options the adapter does not reproduce."""

    # ----- where the family keeps things --------------------------------------------------------------------
    def _attn_norm(self, layer: int) -> nn.Module:
        raise NotImplementedError

    def _mlp_norm(self, layer: int) -> nn.Module:
        raise NotImplementedError

    def _mlp_module(self, layer: int) -> nn.Module:
        raise NotImplementedError

    def _final_norm(self) -> nn.Module:
        raise NotImplementedError

    def head_weights(self, layer: int) -> HeadWeights:
        raise NotImplementedError

    def _qkv_shared(self, layer: int, x: torch.Tensor):
        """q (B, H, T, e), k and v (B, Hkv, T, e) of one normalised input x (B, T, d), by its modules."""
        raise NotImplementedError

    def _out_proj_no_bias(self, layer: int, a: torch.Tensor) -> torch.Tensor:
        """Output projection of concatenated heads a (B, T, H*e) -> (B, T, d), without the bias."""
        raise NotImplementedError

    def _position(self, q: torch.Tensor, k: torch.Tensor):
        """Position encoding applied to queries and keys (B, H, T, e); identity unless the family rotates."""
        return q, k

    def _scale(self, layer: int) -> float:
        return self.head_dim**-0.5

    # ----- the Adapter interface ----------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def attention_qkv(self, layer: int, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor):
        """q_in (H or 1, B, T, d), k_in/v_in (Hkv or 1, B, T, d) -> q (B, H, T, e), k/v (B, Hkv, T, e)."""
        norm = self._attn_norm(layer)
        if q_in is k_in and k_in is v_in and q_in.shape[0] == 1:  # unmasked run: one input, one norm
            q, k, v = self._qkv_shared(layer, norm(q_in[0]))
        else:
            every_q, every_kv = slice(0, self.n_heads), slice(0, self.n_kv_heads)
            q = self.project(layer, "q", q_in, every_q)
            k = self.project(layer, "k", k_in, every_kv)
            v = self.project(layer, "v", v_in, every_kv)
        q, k = self._position(q, k)
        return q, k, v

    def project(self, layer: int, kind: str, x: torch.Tensor, heads: slice) -> torch.Tensor:
        w = self.head_weights(layer)
        weight, bias = {"q": (w.q, w.q_bias), "k": (w.k, w.k_bias), "v": (w.v, w.v_bias)}[kind]
        bias = None if bias is None else bias[heads]
        return project_heads(self._attn_norm(layer)(x), weight[heads].transpose(1, 2), bias)

    def position(self, layer: int, q: torch.Tensor, k: torch.Tensor):
        return self._position(q, k)

    def attention(self, layer: int, q, k, v, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Causal softmax attention with key padding: (B, H, T, e) per head, before the output projection."""
        return causal_softmax_attention(q, k, v, attention_mask, causal=True, scale=self._scale(layer))

    def head_out_weight(self, layer: int) -> torch.Tensor:
        return self.head_weights(layer).o

    def head_write_sum(self, layer: int, a: torch.Tensor) -> torch.Tensor:
        b, h, t, e = a.shape
        return self._out_proj_no_bias(layer, a.transpose(1, 2).reshape(b, t, h * e))

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The MLP writer's output (B, T, d) for residual input x (B, T, d), its pre-norm included."""
        return self._mlp_module(layer)(self._mlp_norm(layer)(x))

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) from the final residual (B, T, d): final norm, then lm_head."""
        return self.model.lm_head(self._final_norm()(x))

    def summary(self) -> dict:
        return {
            **super().summary(),
            "family": self.family,
            "model_class": type(self.model).__name__,
            "name_or_path": getattr(self.config, "_name_or_path", "") or "",
        }


class GPT2Adapter(HFAdapter):
    """GPT2LMHeadModel: learned positions, LayerNorm, fused Conv1D c_attn (d -> 3d, columns [q | k | v])."""

    family = "gpt2"
    embed_names = ("tok_embeds", "pos_embeds")

    def __init__(self, model: nn.Module):
        super().__init__(model)
        c = self.config
        self.n_layers, self.n_heads = c.n_layer, c.n_head
        self.n_kv_heads = c.n_head
        self.d_model = c.n_embd
        self.head_dim = c.n_embd // c.n_head
        self.blocks = model.transformer.h

    def _check_config(self) -> None:
        c = self.config
        if c.n_embd % c.n_head:
            raise EpverifyError(f"GPT-2 config has n_embd {c.n_embd} not divisible by n_head {c.n_head}")

    def _attn_norm(self, layer):
        return self.blocks[layer].ln_1

    def _mlp_norm(self, layer):
        return self.blocks[layer].ln_2

    def _mlp_module(self, layer):
        return self.blocks[layer].mlp

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
        attn = self.blocks[layer].attn
        h, e, d = self.n_heads, self.head_dim, self.d_model
        w, b = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: (d, 3d), x @ w + b

        def part(i: int):
            cols = w[:, i * d : (i + 1) * d]  # (d, H*e)
            return cols.view(d, h, e).permute(1, 2, 0), b[i * d : (i + 1) * d].view(h, e)

        (q, qb), (k, kb), (v, vb) = part(0), part(1), part(2)
        return HeadWeights(q, k, v, qb, kb, vb, attn.c_proj.weight.view(h, e, d))

    def _qkv_shared(self, layer, x):
        q, k, v = self.blocks[layer].attn.c_attn(x).split(self.d_model, dim=-1)
        h, e = self.n_heads, self.head_dim
        return _heads_last(q, h, e), _heads_last(k, h, e), _heads_last(v, h, e)

    def _out_proj_no_bias(self, layer, a):
        return a @ self.blocks[layer].attn.c_proj.weight

    def attention_bias(self, layer: int) -> torch.Tensor | None:
        return self.blocks[layer].attn.c_proj.bias


class _RotaryMixin:
    """Rotary position embedding through the model's own rotary module and apply_rotary_pos_emb."""

    rotary_emb: nn.Module  # the model's own rotary module: rope_theta and rope scaling come with it
    apply_rotary: Callable  # the family's apply_rotary_pos_emb(q, k, cos, sin)

    def _position(self, q, k):
        t = q.shape[2]
        positions = torch.arange(t, device=q.device)[None]  # (1, T): right padding keeps positions 0..T-1
        cos, sin = self.rotary_emb(q, positions)  # (1, T, rotary dims), in q's dtype
        return self.apply_rotary(q, k, cos, sin)


class LlamaAdapter(_RotaryMixin, HFAdapter):
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

    def _attn_norm(self, layer):
        return self.layers[layer].input_layernorm

    def _mlp_norm(self, layer):
        return self.layers[layer].post_attention_layernorm

    def _mlp_module(self, layer):
        return self.layers[layer].mlp

    def _final_norm(self):
        return self.model.model.norm

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (1, B, T, d): the token embeddings (positions enter through RoPE)."""
        return self.model.model.embed_tokens(input_ids)[None]

    def head_weights(self, layer: int) -> HeadWeights:
        attn = self.layers[layer].self_attn
        h, kv, e = self.n_heads, self.n_kv_heads, self.head_dim
        q, qb = _linear_in_heads(attn.q_proj, h, e)
        k, kb = _linear_in_heads(attn.k_proj, kv, e)
        v, vb = _linear_in_heads(attn.v_proj, kv, e)
        return HeadWeights(q, k, v, qb, kb, vb, _linear_out_heads(attn.o_proj, h, e))

    def _qkv_shared(self, layer, x):
        attn = self.layers[layer].self_attn
        h, kv, e = self.n_heads, self.n_kv_heads, self.head_dim
        return (
            _heads_last(attn.q_proj(x), h, e),
            _heads_last(attn.k_proj(x), kv, e),
            _heads_last(attn.v_proj(x), kv, e),
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


class GPTNeoXAdapter(_RotaryMixin, HFAdapter):
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

    def _attn_norm(self, layer):
        return self.layers[layer].input_layernorm

    def _mlp_norm(self, layer):
        return self.layers[layer].post_attention_layernorm

    def _mlp_module(self, layer):
        return self.layers[layer].mlp

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
        return HeadWeights(q, k, v, qb, kb, vb, _linear_out_heads(attn.dense, h, e))

    def _qkv_shared(self, layer, x):
        qkv = self.layers[layer].attention.query_key_value(x)  # (B, T, 3d)
        qkv = _heads_last(qkv, self.n_heads, 3 * self.head_dim)  # (B, H, T, 3e)
        return qkv.chunk(3, dim=-1)

    def _out_proj_no_bias(self, layer, a):
        return F.linear(a, self.layers[layer].attention.dense.weight)

    def attention_bias(self, layer: int) -> torch.Tensor | None:
        return self.layers[layer].attention.dense.bias


ADAPTERS: dict[str, type[HFAdapter]] = {
    "gpt2": GPT2Adapter,
    "llama": LlamaAdapter,
    "gpt_neox": GPTNeoXAdapter,
    "qwen2": Qwen2Adapter,
}
