"""What the Hugging Face families share: per-head weight views, pre-norm blocks, causal softmax attention, RoPE.

The families themselves are the modules `registry.MODULES` names (`gpt2.py`, `llama.py`, `gemma.py`, ...).

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
    """What the Hugging Face families share: blocks of norms around attention and MLP, causal softmax attention
    (with sliding windows and soft-capping where a family has them), per-head projections.

    A family says where its modules are (its decoder `layers`, the names of their norms and MLP, `_final_norm`),
    gives per-head weight views (`head_weights`), the projection of a shared input with the model's own modules
    (`_qkv_shared`, the fast path of unmasked runs), and its position encoding.

    The preconditions a family must meet are the adapter contract's (`base.Adapter`).
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
    # otherwise; None: the family has no such norm), and of the post-norms that follow the summed attention output
    # and the MLP output (Gemma 2/3, OLMo 2); `head_norms`: per-head q/k norms `self_attn.q_norm`/`k_norm` over
    # each head's features, before the rotation (Qwen3, Gemma 3). `self.layers` is the model's list of decoder
    # layers.
    attn_norm_name: str | None = "input_layernorm"
    mlp_norm_name: str | None = "post_attention_layernorm"
    mlp_name = "mlp"
    attn_post_norm_name: str | None = None
    mlp_post_norm_name: str | None = None
    head_norms = False
    layers: nn.ModuleList

    def _norm(self, layer: int, name: str | None) -> Callable:
        return _identity if name is None else getattr(self.layers[layer], name)

    def _attn_norm(self, layer: int) -> Callable:
        return self._norm(layer, self.attn_norm_name)

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

    def _position(self, layer: int, q: torch.Tensor, k: torch.Tensor):
        """Position encoding applied to queries and keys (B, H, T, e); identity unless the family rotates."""
        return q, k

    def _scale(self, layer: int) -> float:
        return self.head_dim**-0.5

    def _window(self, layer: int) -> int | None:
        """The layer's sliding window (keys at most window - 1 positions back), or None for full attention.
        With `layer_types` (Qwen2, Qwen3, Gemma 2/3) the layers marked sliding_attention slide; without it a set
        `sliding_window` applies to every layer (Mistral, Phi-3)."""
        window = getattr(self.config, "sliding_window", None)
        types = getattr(self.config, "layer_types", None)
        if not window:
            return None
        return window if types is None or types[layer] == "sliding_attention" else None

    def _softcap(self) -> float | None:
        """Attention soft-capping (Gemma 2's attn_logit_softcapping), None for none."""
        return getattr(self.config, "attn_logit_softcapping", None)

    def _head_norm(self, layer: int, kind: str) -> Callable:
        if not self.head_norms or kind == "v":
            return _identity
        return getattr(self.layers[layer].self_attn, f"{kind}_norm")

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
            q, k = self._head_norm(layer, "q")(q), self._head_norm(layer, "k")(k)
        else:
            every_q, every_kv = slice(0, self.n_heads), slice(0, self.n_kv_heads)
            q = self.project(layer, "q", q_in, every_q)
            k = self.project(layer, "k", k_in, every_kv)
            v = self.project(layer, "v", v_in, every_kv)
        return (*self._position(layer, q, k), v)

    def project(self, layer: int, kind: str, x: torch.Tensor, heads: slice) -> torch.Tensor:
        w = self.head_weights(layer)
        weight, bias = {"q": (w.q, w.q_bias), "k": (w.k, w.k_bias), "v": (w.v, w.v_bias)}[kind]
        bias = None if bias is None else bias[heads]
        out = project_heads(self._attn_norm(layer)(x), weight[heads].transpose(1, 2), bias)
        return self._head_norm(layer, kind)(out)

    def position(self, layer: int, q: torch.Tensor, k: torch.Tensor):
        return self._position(layer, q, k)

    def attention(self, layer: int, q, k, v, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Causal softmax attention with key padding: (B, H, T, e) per head, before the output projection.

        Under a post-norm (Gemma 2/3, OLMo 2: a norm of the summed attention output), each head's output is
        divided here by rho, the norm's statistic of this run's sum of the layer's head writes, and the norm's
        gain joins the output projection (`head_out_weight`): head h then writes g * (W_o^h a_h) / rho, the
        heads still sum to exactly what the layer writes, and an ablated head's value carries its own run's rho.
        """
        a = causal_softmax_attention(q, k, v, attention_mask, causal=True, scale=self._scale(layer),
                                     window=self._window(layer), softcap=self._softcap())
        if self.attn_post_norm_name is None:
            return a
        b, h, t, e = a.shape
        total = self._out_proj_no_bias(layer, a.transpose(1, 2).reshape(b, t, h * e)).float()
        eps = _norm_eps(self._norm(layer, self.attn_post_norm_name))
        inv_rho = torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + eps)  # (B, T, 1)
        return (a.float() * inv_rho[:, None]).to(a.dtype)

    def _post_norm_gain(self, norm: nn.Module) -> torch.Tensor:
        """The gain an RMS post-norm multiplies by (its weight; Gemma's norms use 1 + weight)."""
        return norm.weight

    def head_out_weight(self, layer: int) -> torch.Tensor:
        o = self.head_weights(layer).o
        if self.attn_post_norm_name is None:
            return o
        return o * self._post_norm_gain(self._norm(layer, self.attn_post_norm_name)).to(o.dtype)

    def head_write_sum(self, layer: int, a: torch.Tensor) -> torch.Tensor:
        if self.attn_post_norm_name is not None:
            return self.head_writes(layer, a).sum(0)
        b, h, t, e = a.shape
        return self._out_proj_no_bias(layer, a.transpose(1, 2).reshape(b, t, h * e))

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The MLP writer's output (B, T, d) for residual input x (B, T, d), its pre- and post-norms included."""
        out = self._mlp_module(layer)(self._norm(layer, self.mlp_norm_name)(x))
        return self._norm(layer, self.mlp_post_norm_name)(out)

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) from the final residual (B, T, d): final norm, lm_head, soft-capping (Gemma 2/3)."""
        logits = self.model.get_output_embeddings()(self._final_norm()(x))  # lm_head (GPT-NeoX: embed_out before 5.x)
        cap = getattr(self.config, "final_logit_softcapping", None)
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def summary(self) -> dict:
        return {
            **super().summary(),
            "family": self.family,
            "model_class": type(self.model).__name__,
            "name_or_path": getattr(self.config, "_name_or_path", "") or "",
        }


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _norm_eps(norm: nn.Module) -> float:
    for name in ("eps", "variance_epsilon"):
        if hasattr(norm, name):
            return float(getattr(norm, name))
    raise TypeError(f"{type(norm).__name__} has no eps")


class RotaryMixin:
    """Rotary position embedding through the model's own rotary module and apply_rotary_pos_emb."""

    rotary_emb: nn.Module  # the model's own rotary module: rope_theta and rope scaling come with it
    apply_rotary: Callable  # the family's apply_rotary_pos_emb(q, k, cos, sin)

    def _position(self, layer, q, k):
        positions = torch.arange(q.shape[2], device=q.device)[None]  # (1, T): right padding keeps 0..T-1
        cos, sin = self._cos_sin(layer, q, positions)  # (1, T, rotary dims), in q's dtype
        return self.apply_rotary(q, k, cos, sin)

    def _cos_sin(self, layer: int, q: torch.Tensor, positions: torch.Tensor):
        return self.rotary_emb(q, positions)
