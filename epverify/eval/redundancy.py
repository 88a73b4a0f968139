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
    per graph edge, e.g. the log-alphas), removing them while the circuit's faithfulness loss (mean per position,
    `Evaluator.mean_loss`) stays at most `tolerance` above the loss of `circuit` itself, so the total change stays
    within the tolerance. Edges are tried in runs: a run that can go together goes in one evaluation and the next
    run is twice as long; one that cannot is halved, down to a single edge, which is then kept (most of what
    training leaves on a large graph is redundant, and a run costs one masked pass over the data however long it
    is). An edge kept in one pass can become removable once edges after it are gone (two routes that stand in for
    each other until one of them is removed), so the passes repeat over the edges still kept until one removes
    nothing; in that last pass every kept edge was tried alone, so each is needed. Dangling edges are then dropped
    again. Returns a new Circuit; `dropped_redundant` counts the edges this pass removed."""
    graph = evaluator.graph
    mask = circuit.mask(graph)
    limit = evaluator.mean_loss(mask) + tolerance
    kept = set(circuit.edges)
    order = sorted(circuit.edges, key=lambda e: float(scores[graph.edge_index[e]]))
    while True:
        before, todo, run = len(kept), [e for e in order if e in kept], 1
        while todo:
            trial = mask.clone()
            trial[[graph.edge_index[e] for e in todo[:run]]] = 0.0
            if evaluator.mean_loss(trial, limit) <= limit:  # a run that breaks it stops at the batch that shows it
                mask = trial
                kept.difference_update(todo[:run])
                todo, run = todo[run:], run * 2
            elif run > 1:
                run //= 2
            else:
                todo = todo[1:]
        if len(kept) == before:
            break
    final = prune_dangling(graph, kept, evaluator.ablation)
    return replace(circuit, edges=sorted(final, key=graph.edge_index.__getitem__),
                   dropped_dangling=circuit.dropped_dangling + len(kept) - len(final),
                   dropped_redundant=len(circuit.edges) - len(kept))
