"""What the Hugging Face families share: per-head weight views, pre-norm blocks, causal softmax attention, RoPE.

The families themselves are `gpt2.py`, `llama.py` (Llama, CodeLlama, Qwen2) and `neox.py`.

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
from torch import nn

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


def linear_in_heads(linear: nn.Linear, n: int, e: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """nn.Linear(d -> n*e) as per-head views: weight (n, e, d), bias (n, e) or None."""
    bias = None if linear.bias is None else linear.bias.view(n, e)
    return linear.weight.view(n, e, -1), bias


def linear_out_heads(linear: nn.Linear, n: int, e: int) -> torch.Tensor:
    """nn.Linear(n*e -> d) as per-head views (n, e, d): head h's slice of the input columns, transposed."""
    return linear.weight.view(-1, n, e).permute(1, 2, 0)


def heads_last(x: torch.Tensor, n: int, e: int) -> torch.Tensor:
    """(B, T, n*e) -> (B, n, T, e)."""
    return x.view(*x.shape[:2], n, e).transpose(1, 2)


class HFAdapter(Adapter):
    """What the Hugging Face families share: pre-norm blocks, causal softmax attention, per-head projections.

    A family says where its modules are (its decoder `layers`, the names of their norms and MLP, `_final_norm`),
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
    # Names of a decoder layer's attention pre-norm, MLP pre-norm and MLP (Llama's layout unless a family says
    # otherwise); `self.layers` is the model's list of decoder layers.
    attn_norm_name, mlp_norm_name, mlp_name = "input_layernorm", "post_attention_layernorm", "mlp"
    layers: nn.ModuleList

    def _attn_norm(self, layer: int) -> nn.Module:
        return getattr(self.layers[layer], self.attn_norm_name)

    def _mlp_norm(self, layer: int) -> nn.Module:
        return getattr(self.layers[layer], self.mlp_norm_name)

    def _mlp_module(self, layer: int) -> nn.Module:
        return getattr(self.layers[layer], self.mlp_name)

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


class RotaryMixin:
    """Rotary position embedding through the model's own rotary module and apply_rotary_pos_emb."""

    rotary_emb: nn.Module  # the model's own rotary module: rope_theta and rope scaling come with it
    apply_rotary: Callable  # the family's apply_rotary_pos_emb(q, k, cos, sin)

    def _position(self, q, k):
        t = q.shape[2]
        positions = torch.arange(t, device=q.device)[None]  # (1, T): right padding keeps positions 0..T-1
        cos, sin = self.rotary_emb(q, positions)  # (1, T, rotary dims), in q's dtype
        return self.apply_rotary(q, k, cos, sin)
