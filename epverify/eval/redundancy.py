"""The last step of extraction for compiled programs: drop the edges the binary circuit does not need.

Stochastic gates make an edge that duplicates a kept route worth something in training (it stands in when that
route's gate is sampled shut); the binary circuit has no such use for it. See docs/method.md, "Extraction".
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..io.circuit import Circuit, prune_dangling
from .evaluator import Evaluator


@torch.no_grad()
def drop_redundant(evaluator: Evaluator, circuit: Circuit, scores: torch.Tensor, tolerance: float) -> Circuit:
    """`circuit` without the edges it does not need. Passes over its edges in ascending order of `scores` (one
    per graph edge, e.g. the log-alphas): an edge is removed when the circuit without it, and without the edges
    removed before it, has a faithfulness loss (mean per position, `Evaluator.mean_loss`) at most `tolerance` above
    the loss of `circuit` itself, so the total change stays within the tolerance. An edge kept in one pass can
    become removable once edges after it are gone (two routes that stand in for each other until one of them is
    removed), so the passes repeat over the edges still kept until one removes nothing. Dangling edges are then
    dropped again. Returns a new Circuit; `dropped_redundant` counts the edges this pass removed."""
    graph = evaluator.graph
    mask = circuit.mask(graph)
    limit = evaluator.mean_loss(mask) + tolerance
    kept = set(circuit.edges)
    order = sorted(circuit.edges, key=lambda e: float(scores[graph.edge_index[e]]))
    while True:
        before = len(kept)
        for edge in [e for e in order if e in kept]:
            trial = mask.clone()
            trial[graph.edge_index[edge]] = 0.0
            if evaluator.mean_loss(trial) <= limit:
                mask = trial
                kept.discard(edge)
        if len(kept) == before:
            break
    final = prune_dangling(graph, kept, evaluator.ablation)
    return replace(circuit, edges=sorted(final, key=graph.edge_index.__getitem__),
                   dropped_dangling=circuit.dropped_dangling + len(kept) - len(final),
                   dropped_redundant=len(circuit.edges) - len(kept))
