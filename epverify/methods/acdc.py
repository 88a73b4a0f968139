"""ACDC (Conmy et al. 2023): greedy edge removal from the output backwards, with a threshold on the loss.

Readers are visited in reverse topological order (the output, then layer by layer backwards: the MLP input,
then the heads' value, key and query inputs), and each reader's incoming edges from its latest writer to its
earliest. An edge is removed for good when removing it, on top of everything removed so far, raises the
faithfulness loss (KL to the full model; squared error for a numerical output) by less than `threshold`:

    remove (w -> r)  iff  loss(circuit without it) - loss(circuit) < threshold

Masks are binary and runs are no-grad `engine.masked_run`s on batches whose ablated runs are cached
(`Evaluator`). A reader is skipped when the writer it feeds has no kept outgoing edge left: all its
incoming edges are removed untested, since they can no longer change the output (exact, whatever the
ablation).

Cost: one masked forward over the evaluation rows per tested edge, at most num_edges (hundreds to ~2,000 on
the Tracr zoo), far fewer in practice because dead readers are skipped. `max_examples` caps the rows (a seeded
subset) to bound that cost; the trial count is reported in `info["trials"]`.

Scores, for ROC curves: the loss increase measured when the edge was tried (kept edges score at least
`threshold`, removed ones less), and below every tried edge for the untested ones, so the top-k edges by score
for k = the circuit's size are the circuit.
"""

from __future__ import annotations

import time

import torch

from ..core.dataset import PruneData
from ..core.graph import OUTPUT
from ..eval.evaluator import Evaluator, as_adapter
from ..io.circuit import prune_dangling
from .base import MethodResult, circuit_from_mask


def acdc(model, data: PruneData, ablation: str = "interchange", threshold: float = 0.01,
         batch_size: int = 256, max_examples: int | None = 256, seed: int = 0,
         evaluator: Evaluator | None = None) -> MethodResult:
    """ACDC's circuit at `threshold` (nats of KL, or squared error for a numerical output)."""
    start = time.perf_counter()
    adapter = as_adapter(model)
    graph = adapter.graph
    if evaluator is None:
        rows = None
        if max_examples is not None and len(data) > max_examples:
            gen = torch.Generator().manual_seed(seed)
            rows = torch.randperm(len(data), generator=gen)[:max_examples].sort().values
        evaluator = Evaluator(adapter, data, ablation, batch_size, rows=rows)
    ev = evaluator
    z = torch.ones(graph.num_edges, dtype=adapter.dtype, device=adapter.device)
    tried = torch.zeros(graph.num_edges, dtype=torch.bool)
    scores = torch.zeros(graph.num_edges, dtype=torch.float64)
    current = ev.mean_loss(z)
    trials = 0

    def alive(node: str) -> bool:  # does a writer (or the output) still reach the output through kept edges?
        if node == OUTPUT:
            return True
        return any(z[graph.edge_index[(node, r)]] > 0 for r in readers_of[node])

    readers_of: dict[str, list[str]] = {w: [] for w in graph.writers}
    for w, r in graph.edges:
        readers_of[w].append(r)
    live_cache: dict[str, bool] = {}
    for group in reversed(graph.groups):
        for reader in reversed(group.readers):
            feeds = graph.reader_nodes(reader) or (OUTPUT,)
            for node in feeds:  # every downstream reader of these nodes has been decided already
                if node not in live_cache:
                    live_cache[node] = alive(node)
            edges = range(group.edge_start + (group.readers.index(reader) + 1) * group.n_writers - 1,
                          group.edge_start + group.readers.index(reader) * group.n_writers - 1, -1)
            if not any(live_cache[node] for node in feeds):
                for e in edges:
                    z[e] = 0
                continue
            for e in edges:
                z[e] = 0
                loss = ev.mean_loss(z)
                trials += 1
                tried[e] = True
                scores[e] = loss - current
                if loss - current < threshold:
                    current = loss
                else:
                    z[e] = 1
    if tried.any():
        floor = min(float(scores[tried].min()), 0.0) - 1.0
        scores[~tried] = floor
    mask = z.detach().cpu()
    kept = {graph.edges[i] for i in torch.nonzero(mask > 0.5).flatten().tolist()}
    final = prune_dangling(graph, kept, ablation)
    final_mask = torch.zeros(graph.num_edges)
    if final:
        final_mask[graph.index_of(sorted(final))] = 1
    circuit = circuit_from_mask(graph, final_mask, ev.ablation, method="acdc", threshold=threshold,
                                loss=current)
    circuit.dropped_dangling = len(kept) - len(final)
    return MethodResult("acdc", scores, graph, ev.ablation, circuit=circuit,
                        seconds=time.perf_counter() - start,
                        info={"trials": trials, "threshold": threshold, "loss": current,
                              "examples": sum(len(b) for b in ev.batches)})
