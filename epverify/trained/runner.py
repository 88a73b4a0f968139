"""Runs of any model with an edge mask, written in plain autograd so that gradients reach the model's weights.

The masked engine (`epverify.core.engine`) trains masks on a frozen model; training a model to have a known circuit
needs the same runs with gradients for its weights. Here every reader's input is the oracle's sum (docs/design.md,
"The method"), vectorised per reader group:

    x_r = bias(r) + sum_w [ z_wr h_w + (1 - z_wr) a_w ]  =  bias(r) + sum_w a_w + sum_w z_wr (h_w - a_w)

with `a` the writers' outputs of another run (an interchange source), or zeros (zero ablation). With one mask per
example, an interchange intervention on a node (every out-edge of a writer from the source), on one edge, or on a
whole circuit is one batched run. tests/test_trained.py checks it against the oracle.
"""

from __future__ import annotations

import torch


def out_edges(graph, writer: str) -> list[int]:
    """Edge indices of every edge leaving `writer`."""
    w = graph.writer_index[writer]
    return [i for i, index in enumerate(graph.edge_writer) if index == w]


def mixed_run(adapter, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, keep: torch.Tensor,
              ablated: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Writer outputs (W, B, T, d) and logits (B, T, V) of a run whose edge (w, r) carries w's output where
    keep[b, e] is 1 and `ablated[w, b]` where it is 0 (None: zeros). keep: (B, num_edges) or (num_edges,)."""
    graph = adapter.graph
    batch, seq = input_ids.shape
    keep = keep.expand(batch, -1) if keep.dim() == 1 else keep
    embeds = adapter.embed(input_ids)  # (E, B, T, d)
    outputs = list(embeds.unbind(0))
    bias = embeds.new_zeros(batch, seq, adapter.d_model)

    def mix(group, base):  # -> (R, B, T, d)
        h = torch.stack(outputs[: group.n_writers])  # (W_up, B, T, d)
        a = None if ablated is None else ablated[: group.n_writers]
        z = keep[:, group.edge_start : group.edge_start + group.n_edges].reshape(batch, -1, group.n_writers)
        delta = h if a is None else h - a
        x = torch.einsum("brw,wbtd->rbtd", z.to(h.dtype), delta) + base
        return x if a is None else x + a.sum(0)

    nq, nkv = adapter.n_heads, adapter.n_kv_heads
    for layer in range(adapter.n_layers):
        x = mix(graph.attn_group(layer), bias)
        q, k, v = adapter.attention_qkv(layer, x[:nq], x[nq : nq + nkv], x[nq + nkv :])
        heads = adapter.attention(layer, q, k, v, attention_mask)  # (B, H, T, e)
        outputs += list(adapter.head_writes(layer, heads).unbind(0))
        layer_bias = adapter.attention_bias(layer)
        after = bias if layer_bias is None else bias + layer_bias
        outputs.append(adapter.mlp(layer, mix(graph.mlp_group(layer), bias if adapter.parallel_mlp else after)[0]))
        bias = after
    return torch.stack(outputs), adapter.unembed(mix(graph.out_group, bias)[0])
