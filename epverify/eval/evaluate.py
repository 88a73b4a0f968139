"""Faithfulness of any edge set: KL (or squared error), and agreement of decisions with the full model."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..adapters.base import Adapter
from ..core import engine
from ..io.circuit import Circuit, prune_dangling
from ..train.loop import AblationSource, Faithfulness, PruneData


@torch.no_grad()
def evaluate(adapter: Adapter, data: PruneData, edge_mask: torch.Tensor, ablation: str,
             batch_size: int = 256, node_mask: torch.Tensor | None = None) -> dict:
    """Mean faithfulness loss, accuracy (fraction of loss positions whose decision, `adapter.decide`, matches
    the full model's) and exact match (accuracy == 1)."""
    loss_fn = Faithfulness(adapter, data, batch_size)
    ablated_for = AblationSource(adapter, data, ablation, batch_size)
    total_loss, total_pos, matches = 0.0, 0, 0
    for start in range(0, len(data), batch_size):
        index = torch.arange(start, min(start + batch_size, len(data)))
        logits = engine.masked_run(adapter, data.input_ids[index], ablated_for(index), edge_mask.to(adapter.dtype),
                                   node_mask, data.attention_mask[index])
        n_pos = int(data.loss_mask[index].sum())
        total_loss += loss_fn(logits, index).item() * n_pos
        full = engine.forward(adapter, data.input_ids[index], data.attention_mask[index])
        where = data.loss_mask[index]
        matches += int((adapter.decide(logits[where]) == adapter.decide(full[where])).sum())
        total_pos += n_pos
    accuracy = matches / total_pos
    name = "kl" if adapter.output_kind == "distribution" else "mse"
    return {name: total_loss / total_pos, "accuracy": accuracy, "exact_match": accuracy == 1.0}


def roc_auc(scores: torch.Tensor, truth: torch.Tensor) -> float | None:
    """Area under the ROC curve of `scores` ranking the edges in `truth` (bool) above the rest; None if one
    class is empty. Ties count one half (Mann-Whitney U)."""
    truth = truth.bool()
    pos, neg = scores[truth].double(), scores[~truth].double()
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


@torch.no_grad()
def drop_redundant(adapter: Adapter, data: PruneData, circuit: Circuit, scores: torch.Tensor, ablation: str,
                   tolerance: float, batch_size: int = 256) -> Circuit:
    """`circuit` without the edges it does not need. One pass over its edges in ascending order of `scores` (one
    per graph edge, e.g. the log-alphas): an edge is removed when the circuit without it, and without the edges
    removed before it, has a faithfulness loss (mean per position, as `evaluate`) at most `tolerance` above the
    loss of `circuit` itself, so the total change stays within the tolerance. Dangling edges are then dropped
    again. Returns a new Circuit; `dropped_redundant` counts the edges this pass removed."""
    graph = adapter.graph
    loss_fn = Faithfulness(adapter, data, batch_size)
    ablated_for = AblationSource(adapter, data, ablation, batch_size)
    positions = int(data.loss_mask.sum())

    def loss(mask: torch.Tensor) -> float:
        total = 0.0
        for start in range(0, len(data), batch_size):
            index = torch.arange(start, min(start + batch_size, len(data)))
            out = engine.masked_run(adapter, data.input_ids[index], ablated_for(index), mask.to(adapter.dtype), None,
                                    data.attention_mask[index], positions=data.loss_mask[index])
            total += loss_fn(out, index).item() * int(data.loss_mask[index].sum())
        return total / positions

    mask = circuit.mask(graph)
    limit = loss(mask) + tolerance
    kept = set(circuit.edges)
    for edge in sorted(circuit.edges, key=lambda e: float(scores[graph.edge_index[e]])):
        trial = mask.clone()
        trial[graph.edge_index[edge]] = 0.0
        if loss(trial) <= limit:
            mask = trial
            kept.discard(edge)
    final = prune_dangling(graph, kept, ablation)
    return replace(circuit, edges=sorted(final, key=graph.edge_index.__getitem__),
                   dropped_dangling=circuit.dropped_dangling + len(kept) - len(final),
                   dropped_redundant=len(circuit.edges) - len(kept))
