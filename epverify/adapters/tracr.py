"""Adapter for Tracr-compiled models: no layer norm, zero biases, ReLU MLPs, logits/sqrt(key_size) attention."""

from __future__ import annotations

import torch

from ..tracr.model import CompiledModel
from .base import Adapter, causal_softmax_attention, project_heads


class TracrAdapter(Adapter):
    embed_names = ("tok_embeds", "pos_embeds")
    # Tracr's output directions are 0/1: read at temperature 1/10, a wrong output costs several nats (a numerical
    # output's squared error is scaled by 100), which keeps the faithfulness gradient of every ground-truth edge
    # well above the sparsity pressure. At scale 1 zero-ablation recovery falls from 14/16 to 5/16 programs
    # (docs/recovery.md).
    output_scale = 10.0

    def __init__(self, model: CompiledModel):
        self.model = model
        w = model.weights
        self.n_layers, self.n_heads, self.n_kv_heads = model.n_layers, model.n_heads, model.n_heads
        self.head_dim = model.key_size
        self.d_model = model.d_model
        self.output_kind = "distribution" if model.categorical else "numerical"
        h, k, d = self.n_heads, self.head_dim, self.d_model

        def per_head_in(m: torch.Tensor) -> torch.Tensor:  # (d, H*K) -> (H, d, K)
            return m.reshape(d, h, k).permute(1, 0, 2)

        self.layers = []
        for layer in range(self.n_layers):
            p = f"layers.{layer}."
            w1, b1, w2 = _live_hidden_units(w[p + "mlp1_w"], w[p + "mlp1_b"], w[p + "mlp2_w"])
            self.layers.append(
                {
                    "q": per_head_in(w[p + "query"]),
                    "k": per_head_in(w[p + "key"]),
                    "v": per_head_in(w[p + "value"]),
                    "o": w[p + "linear"].reshape(h, k, d),  # (H, K, d)
                    "o_full": w[p + "linear"],
                    "w1": w1,
                    "b1": b1,
                    "w2": w2,
                    "b2": w[p + "mlp2_b"],
                    # a layer whose heads read no value at all (Tracr's layout filler): every head outputs 0
                    "silent": not bool(w[p + "value"].any()),
                }
            )

    @property
    def dtype(self) -> torch.dtype:
        return self.model.weights["token_embed"].dtype

    @property
    def device(self) -> torch.device:
        return self.model.weights["token_embed"].device

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        w = self.model.weights
        tok = w["token_embed"][input_ids]  # (B, T, d)
        pos = w["pos_embed"][: input_ids.shape[1]].expand_as(tok)
        return torch.stack([tok, pos])

    def project(self, layer, kind, x, heads):
        return project_heads(x, self.layers[layer][kind][heads], None)

    def silent(self, layer: int) -> bool:
        return self.layers[layer]["silent"]

    def attention(self, layer, q, k, v, attention_mask):
        return causal_softmax_attention(q, k, v, attention_mask, self.model.causal, self.model.attention_scale())

    def head_out_weight(self, layer):
        return self.layers[layer]["o"]

    def head_write_sum(self, layer, a):
        b, h, t, e = a.shape
        return a.transpose(1, 2).reshape(b, t, h * e) @ self.layers[layer]["o_full"]

    def mlp(self, layer, x):
        p = self.layers[layer]
        return torch.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def unembed(self, x):
        return x @ self.model.weights["unembed"]

    def decide(self, outputs: torch.Tensor) -> torch.Tensor:
        """Categorical: the argmax value index, or -1 where no output direction is set (RASP's None).
        Numerical: the value rounded to the decoding precision (x 10^4)."""
        if self.model.categorical:
            return torch.where(outputs.amax(-1) >= 0.5, outputs.argmax(-1), -1)
        return torch.round(outputs[..., 0] * 1e4).long()

    def summary(self) -> dict:
        return {"family": "tracr", "program": self.model.name, **super().summary()}


def _live_hidden_units(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor):
    """An MLP's weights without the hidden units that cannot contribute: Tracr pads every layer's MLP to the widest
    one (516 units in each of shuffle_dyck2's 8 layers, of which some use 1), and a unit whose input weights and
    bias are zero (ReLU(0) = 0) or whose output weights are zero adds an exact 0 to every output."""
    live = ((w1 != 0).any(0) | (b1 != 0)) & (w2 != 0).any(1)
    return w1[:, live], b1[live], w2[live]
