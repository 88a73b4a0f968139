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

A time budget (`max_seconds`) stops the pass early: the edges not tried by then stay in the circuit (removing
an edge is what needs a test), and `info["stopped_early"]` says so.

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
         evaluator: Evaluator | None = None, max_seconds: float | None = None) -> MethodResult:
    """ACDC's circuit at `threshold` (nats of KL, or squared error for a numerical output); `max_seconds`: stop
    trying edges after this long (None: no limit)."""
    start = time.perf_counter()
    adapter = as_adapter(model)
    graph = adapter.graph
    if evaluator is None:
        rows = None
        if max_examples is not None and len(data) > max_examples:
            gen = torch.Generator().manual_seed(seed)
            rows = torch.randperm(len(data), generator=gen)[:max_examples].sort().values
        evaluator = Evaluator(adapter, data, ablation, batch_size, rows=rows)
    search = _Search(evaluator, threshold, None if max_seconds is None else start + max_seconds)
    search.run()
    kept = {graph.edges[i] for i in torch.nonzero(search.z.detach().cpu() > 0.5).flatten().tolist()}
    final = prune_dangling(graph, kept, ablation)
    final_mask = torch.zeros(graph.num_edges)
    if final:
        final_mask[graph.index_of(sorted(final))] = 1
    circuit = circuit_from_mask(graph, final_mask, evaluator.ablation, method="acdc", threshold=threshold,
                                loss=search.current)
    circuit.dropped_dangling = len(kept) - len(final)
    return MethodResult("acdc", search.scores(), graph, evaluator.ablation, circuit=circuit,
                        seconds=time.perf_counter() - start,
                        info={"trials": search.trials, "threshold": threshold, "loss": search.current,
                              "examples": sum(len(b) for b in evaluator.batches),
                              "stopped_early": search.stopped_early})


class _Search:
    """The greedy pass: the current mask `z`, its loss, and the loss increase measured for every tried edge."""

    def __init__(self, evaluator: Evaluator, threshold: float, deadline: float | None = None):
        self.ev, self.threshold, graph = evaluator, threshold, evaluator.graph
        self.deadline, self.stopped_early = deadline, False
        self.graph = graph
        self.z = torch.ones(graph.num_edges, dtype=evaluator.adapter.dtype, device=evaluator.adapter.device)
        self.tried = torch.zeros(graph.num_edges, dtype=torch.bool)
        self.increase = torch.zeros(graph.num_edges, dtype=torch.float64)
        self.current = evaluator.mean_loss(self.z)
        self.trials = 0
        self.readers_of: dict[str, list[str]] = {w: [] for w in graph.writers}
        for w, r in graph.edges:
            self.readers_of[w].append(r)

    def alive(self, node: str) -> bool:
        """Does a writer (or the output) still reach the output through kept edges?"""
        if node == OUTPUT:
            return True
        return any(self.z[self.graph.edge_index[(node, r)]] > 0 for r in self.readers_of[node])

    def run(self) -> None:
        graph, live = self.graph, {}
        for group in reversed(graph.groups):
            for reader in reversed(group.readers):
                feeds = graph.reader_nodes(reader) or (OUTPUT,)
                for node in feeds:  # every downstream reader of these nodes has been decided already
                    if node not in live:
                        live[node] = self.alive(node)
                first = group.edge_start + group.readers.index(reader) * group.n_writers
                edges = range(first + group.n_writers - 1, first - 1, -1)  # latest writer first
                if not any(live[node] for node in feeds):
                    for e in edges:
                        self.z[e] = 0
                    continue
                for e in edges:
                    if self.deadline is not None and time.perf_counter() > self.deadline:
                        self.stopped_early = True
                        return
                    self.try_removing(e)

    def try_removing(self, e: int) -> None:
        self.z[e] = 0
        loss = self.ev.mean_loss(self.z)
        self.trials += 1
        self.tried[e] = True
        self.increase[e] = loss - self.current
        if loss - self.current < self.threshold:
            self.current = loss
        else:
            self.z[e] = 1

    def scores(self) -> torch.Tensor:
        """The loss increase of every tried edge; untried edges below all of them."""
        scores = self.increase.clone()
        if self.tried.any():
            scores[~self.tried] = min(float(scores[self.tried].min()), 0.0) - 1.0
        return scores
