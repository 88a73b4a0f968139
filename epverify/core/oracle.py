"""The oracle: run a model keeping only a given set of edges. Exact, slow, and written to be obviously right.

Every writer's output is kept separately in residual space; every reader's input is built by a plain sum over its
upstream writers, taking the writer's clean output where the edge is kept and its ablated output where it is not:

    x_r = bias(r) + sum_w  (h_w if (w, r) kept else h~_w)

`bias(r)` is the sum of attention-output biases upstream of r (constants that belong to no writer). This is the
left-hand side of the identity the engine computes in delta form; tests check the two agree.
"""

from __future__ import annotations

import torch

from ..adapters.base import Adapter
from ..errors import EpverifyError


@torch.no_grad()
def writer_outputs(adapter: Adapter, input_ids, attention_mask=None, kept=None, ablated=None):
    """Each writer's output in residual space (name -> (B, T, d)) and the logits.

    kept: set of (writer, reader) pairs, or None to keep every edge (the full model). ablated: writer name ->
    ablated output (B, T, d), needed when kept is not None.
    """
    graph = adapter.graph
    outputs: dict[str, torch.Tensor] = {}
    embeds = adapter.embed(input_ids)
    for i, name in enumerate(adapter.embed_names):
        outputs[name] = embeds[i]
    zeros = torch.zeros_like(embeds[0])

    def group_inputs(readers, n_writers: int, bias: torch.Tensor) -> list[torch.Tensor]:
        """The inputs of readers that share their writers: readers that keep the same edges get the same sum, made
        once (in place: the same additions in the same order, without a new tensor for each)."""
        made, out = {}, []
        for reader in readers:
            keep = tuple(kept is None or (w, reader) in kept for w in graph.writers[:n_writers])
            if keep not in made:
                x = bias.clone()
                for writer, k in zip(graph.writers, keep):
                    x.add_(outputs[writer] if k else ablated[writer])
                made[keep] = x
            out.append(made[keep])
        return out

    bias = zeros
    for layer in range(adapter.n_layers):
        if adapter.silent(layer):  # its heads output 0 whatever they read
            a = torch.zeros(input_ids.shape[0], adapter.n_heads, input_ids.shape[1], adapter.head_dim,
                            dtype=adapter.dtype, device=adapter.device)
        else:
            group = graph.attn_group(layer)
            x = torch.stack(group_inputs(group.readers, group.n_writers, bias))
            nq, nkv = adapter.n_heads, adapter.n_kv_heads
            q, k, v = adapter.attention_qkv(layer, x[:nq], x[nq : nq + nkv], x[nq + nkv :])
            a = adapter.attention(layer, q, k, v, attention_mask)
        for h, write in enumerate(adapter.head_writes(layer, a)):
            outputs[f"a{layer}.h{h}"] = write
        layer_bias = adapter.attention_bias(layer)
        after = bias if layer_bias is None else bias + layer_bias
        mlp_group = graph.mlp_group(layer)
        x = group_inputs(mlp_group.readers, mlp_group.n_writers, bias if adapter.parallel_mlp else after)[0]
        outputs[f"m{layer}"] = adapter.mlp(layer, x)
        bias = after
    x = group_inputs(graph.out_group.readers, len(graph.writers), bias)[0]
    return outputs, adapter.unembed(x)


@torch.no_grad()
def ablated_outputs(adapter: Adapter, input_ids: torch.Tensor, ablation: str, attention_mask=None,
                    corrupted_ids: torch.Tensor | None = None,
                    reference: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """What each writer's output is replaced by where its edge is not kept (name -> (B, T, d)).

    interchange: the full model's writer outputs on `corrupted_ids`;
    zero: 0;
    mean: per position, the mean writer output over `reference` = (ids, attention_mask).
    """
    if ablation == "interchange":
        if corrupted_ids is None:
            raise EpverifyError("interchange ablation needs corrupted_ids")
        return writer_outputs(adapter, corrupted_ids, attention_mask)[0]
    if ablation == "zero":
        shape = (*input_ids.shape, adapter.d_model)
        zero = torch.zeros(shape, dtype=adapter.dtype, device=adapter.device)
        return {w: zero for w in adapter.graph.writers}
    if ablation == "mean":
        if reference is None:
            raise EpverifyError("mean ablation needs reference inputs")
        ref_ids, ref_mask = reference
        outs, _ = writer_outputs(adapter, ref_ids, ref_mask)
        weight = ref_mask.to(adapter.dtype)[:, :, None]  # (N, T, 1)
        count = weight.sum(0).clamp(min=1)
        seq = input_ids.shape[1]
        return {w: ((o * weight).sum(0) / count)[:seq].expand(input_ids.shape[0], -1, -1) for w, o in outs.items()}
    raise EpverifyError(f"the oracle supports interchange, zero and mean ablation, not {ablation!r}")


@torch.no_grad()
def run_with_edges(
    adapter: Adapter,
    input_ids: torch.Tensor,
    edges,
    ablation: str,
    attention_mask: torch.Tensor | None = None,
    corrupted_ids: torch.Tensor | None = None,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    ablated: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits of the model keeping exactly `edges` (iterable of (writer, reader)), everything else ablated as
    `ablated_outputs` says (`ablated`: its result, when the caller runs many edge sets on the same inputs)."""
    kept = {tuple(e) for e in edges}
    if ablated is None:
        ablated = ablated_outputs(adapter, input_ids, ablation, attention_mask, corrupted_ids, reference)
    _, logits = writer_outputs(adapter, input_ids, attention_mask, kept=kept, ablated=ablated)
    return logits
