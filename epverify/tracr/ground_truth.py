"""Ground-truth circuits of compiled programs: structural edges, then verified by exhaustive ablation.

1. Structure. Every block of a compiled model reads and writes labelled residual directions. A writer writes the
   directions its output weights touch (embedding rows, a head's output projection, an MLP's second layer); a
   reader reads the directions its input weights touch (a head's query, key or value projection, an MLP's first
   layer, the unembedding). An edge is structural when the writer writes a direction the reader reads; the JSON
   records the directions it carries. Any other edge changes only directions its reader ignores: it is exactly
   inert.
2. Verification, per ablation, with the oracle (`epverify.core.oracle`) on the program's whole dataset. An output is the
   unembedded vector at every real position after BOS; two runs agree when they compute the same program outputs
   everywhere: values within `TOLERANCE` for a numerical output; for a categorical one, the same decoded value (argmax,
   or None) with the output distribution the faithfulness loss reads within `KL_TOLERANCE` nats (KL from the full
   model's). Tracr's soft attention leaks a little weight to BOS, and a circuit without the BOS default of a head that
   always finds its match computes the same program without that leak, a change that distribution mostly registers as
   next to nothing (docs/ground_truth.md, "The criterion"). Starting from the structural set, edges are dropped one at a
   time, always the one whose removal changes the outputs least (largest deviation from the full model), as long as the
   circuit without it still agrees with the full model on every input, until no edge can go. What is left is sufficient
   (it reproduces the full model) and every edge in it is necessary (removing it alone changes some output), by
   construction; tests/test_ground_truth.py checks both again for every shipped truth.

   Why least change first: a program can have more than one circuit that is sufficient with every edge
   necessary, and dropping edges in a fixed list order picked one by the accident of that order (shuffle_dyck
   under zero ablation: 19 edges in the list order, the 24 edges of the program's own `select_last` mechanism in
   the reversed order; docs/recovery.md, cause 7). Removing first what changes nothing at all keeps the mechanism
   the full model uses and drops its exact redundancies; ties (equal deviations, mostly exact zeros) are broken by
   how much removing the edge alone from the structural set changes (what the full model does not need goes
   first), then by the edges' names. Where breaking name ties the other way ends in another circuit (an exact
   symmetry: two heads computing the same value under mean ablation in shuffle_dyck), that circuit is recorded
   as `equivalent`: it is as sufficient and as minimal, and either counts as recovered.
"""

from __future__ import annotations

import math

import torch

from ..adapters.tracr import TracrAdapter
from ..core.oracle import ablated_outputs, run_with_edges
from ..eval.metrics import kl_per_position
from .data import dataset
from .model import CompiledModel

TOLERANCE = 1e-3  # numerical outputs: the largest change in the value that still agrees
# categorical outputs: the largest KL(full || circuit), in nats, of the output distribution the faithfulness loss
# reads (`TracrAdapter.output_scale`) at any position that still agrees. Above what Tracr's attention leak to BOS is
# worth where the truths leave it out (at most 6.4e-4, shuffle_dyck2_v4_l10), below what every truth edge whose
# removal keeps the decoded outputs is worth (0.025 and more: sort_unique_v26_l10's BOS pair, the zoo's
# shuffle_dyck2 `a0.h0 > m0`); set from those measurements, not derived (docs/ground_truth.md, "The criterion")
KL_TOLERANCE = 1e-3
BREAKS = float("inf")  # the deviation of a circuit that changes a decoded categorical output
CHUNK = 256  # inputs per oracle run, at most
FIRST_CHUNK = 16  # inputs of the first oracle run; each next run doubles, up to CHUNK
GT_ABLATIONS = ("zero", "interchange", "mean")


def _support(matrix: torch.Tensor, dim: int) -> set[int]:
    """Indices along `dim` where the matrix has a non-zero entry."""
    other = 1 - dim
    return set(torch.nonzero(matrix.abs().amax(dim=other) > 0).flatten().tolist())


def read_write_spaces(model: CompiledModel) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    """Residual directions each writer writes and each reader reads (as residual indices)."""
    w, k, h = model.weights, model.key_size, model.n_heads
    writes = {"tok_embeds": _support(w["token_embed"], 1), "pos_embeds": _support(w["pos_embed"], 1)}
    reads: dict[str, set[int]] = {}
    for layer in range(model.n_layers):
        p = f"layers.{layer}."
        for head in range(h):
            cols = slice(head * k, (head + 1) * k)
            reads[f"a{layer}.h{head}.q"] = _support(w[p + "query"][:, cols], 0)
            reads[f"a{layer}.h{head}.k"] = _support(w[p + "key"][:, cols], 0)
            reads[f"a{layer}.h{head}.v"] = _support(w[p + "value"][:, cols], 0)
            writes[f"a{layer}.h{head}"] = _support(w[p + "linear"][cols, :], 1)
        reads[f"m{layer}"] = _support(w[p + "mlp1_w"], 0)
        writes[f"m{layer}"] = _support(w[p + "mlp2_w"], 1) | _support(w[p + "mlp2_b"][None], 1)
    reads["resid_post"] = _support(w["unembed"], 0)
    return writes, reads


def structural_edges(model: CompiledModel) -> dict[tuple[str, str], list[str]]:
    """Edge -> the residual labels it carries, for every edge whose writer writes what its reader reads."""
    writes, reads = read_write_spaces(model)
    graph = TracrAdapter(model).graph
    out = {}
    for writer, reader in graph.edges:
        carried = writes[writer] & reads[reader]
        if carried:
            out[(writer, reader)] = sorted(model.residual_labels[i] for i in carried)
    return out


class Verifier:
    """Runs the oracle on a program's dataset and compares with the full model.

    The inputs run in chunks and the ablated outputs are computed once. A deviation asked for with a `limit` stops
    at the first chunk that exceeds it: elimination only needs to know that a removal breaks the circuit, and most
    removals it tries do, most of them on any few inputs; so the first chunk is small (`FIRST_CHUNK` rows) and the
    next ones double, up to `CHUNK`. An edge set already run is remembered, exactly or as the lower bound a
    stopped run gave (the two eliminations of `ground_truth` share most of their sets)."""

    def __init__(self, model: CompiledModel, ablation: str):
        self.model, self.ablation = model, ablation
        self.adapter = TracrAdapter(model)
        clean, corrupted = dataset(model.dataset, model)
        self.ids, self.mask = model.encode(clean)
        self.corrupted_ids, _ = model.encode(corrupted)
        self.ablated = ablated_outputs(self.adapter, self.ids, ablation, self.mask, self.corrupted_ids,
                                       (self.ids, self.mask))
        self.chunks = _chunks(self.ids.shape[0])
        full = self.adapter.graph.edges
        self.full = [run_with_edges(self.adapter, self.ids[rows], full, "zero", self.mask[rows]) for rows in
                     self.chunks]
        self.positions = self.mask.bool().clone()
        self.positions[:, 0] = False  # BOS is not an output
        self.decided = [self.adapter.decide(full) for full in self.full]
        self.full_logp = [self._logp(full) for full in self.full] if model.categorical else None
        self.known: dict[frozenset, float] = {}  # exact deviations
        self.over: dict[frozenset, float] = {}  # lower bounds, from runs stopped at a limit

    def outputs(self, edges, rows: slice = slice(None)) -> torch.Tensor:
        ablated = {w: o[rows] for w, o in self.ablated.items()}
        return run_with_edges(self.adapter, self.ids[rows], edges, self.ablation, self.mask[rows], ablated=ablated)

    def _logp(self, outputs: torch.Tensor) -> torch.Tensor:
        """A categorical output as the faithfulness loss reads it: log-probabilities at the adapter's output scale
        (in double precision: the KL of a leak is a difference of nearly equal probabilities)."""
        return torch.log_softmax(outputs.double() * self.adapter.output_scale, -1)

    def deviation(self, edges, limit: float | None = None) -> float:
        """The largest change from the full model's outputs over every real position after BOS: of a value
        (numerical), or KL(full || circuit) in nats (categorical), `BREAKS` where a categorical output decodes
        differently; with `limit`, a value over it may be a lower bound (the chunks after the first that exceeded it
        are not run)."""
        key = frozenset(tuple(e) for e in edges)
        if key in self.known:
            return self.known[key]
        if limit is not None and self.over.get(key, 0.0) > limit:  # already seen to break it (the tie-reversed pass)
            return self.over[key]
        worst = 0.0
        for i, (rows, full) in enumerate(zip(self.chunks, self.full)):
            positions = self.positions[rows]
            if positions.any():
                out = self.outputs(key, rows)
                if self.model.categorical and (self.adapter.decide(out) != self.decided[i])[positions].any():
                    worst = BREAKS  # exact: nothing is larger, so the other chunks cannot change it
                    break
                change = (kl_per_position(self.full_logp[i], self._logp(out)) if self.model.categorical
                          else (out - full).abs().amax(-1))
                worst = max(worst, float(change[positions].max()))
            if limit is not None and worst > limit:
                self.over[key] = worst
                return worst
        self.known[key] = worst
        return worst

    @property
    def tolerance(self) -> float:
        """The largest deviation that agrees."""
        return KL_TOLERANCE if self.model.categorical else TOLERANCE

    def agrees(self, edges) -> bool:
        return self.deviation(edges, self.tolerance) <= self.tolerance


def _chunks(n: int) -> list[slice]:
    """Row slices covering `n` rows: `FIRST_CHUNK` rows, then twice as many each time, up to `CHUNK`."""
    out, start, size = [], 0, FIRST_CHUNK
    while start < n:
        out.append(slice(start, min(start + size, n)))
        start, size = start + size, min(2 * size, CHUNK)
    return out


def eliminate(verifier: Verifier, edges, reverse_ties: bool = False,
              alone: dict | None = None) -> tuple[list, list[tuple]]:
    """Backward elimination from `edges`: repeatedly drop the edge whose removal changes the outputs least, while
    the rest still agrees with the full model. Returns (kept edges, [(dropped edge, deviation)] in drop order).

    Equal deviations (mostly exact zeros) are broken by how much removing the edge alone from `edges` changes the
    outputs (what the starting circuit, the full model's structure, does without it: an edge the full model does
    not need goes before one it does), then by edge name (descending with `reverse_ties`). `alone`: those
    changes, when already computed."""
    start = list(edges)
    if alone is None:
        alone = {e: verifier.deviation([x for x in start if x != e]) for e in start}
    kept = sorted(sorted(start, reverse=reverse_ties), key=lambda e: alone[e])  # stable: name order within ties
    dropped, last = [], {}
    while kept:
        best = _least_change(verifier, kept, last)
        if best is None:
            break
        kept.remove(best[0])
        dropped.append(best)
    return sorted(kept), dropped


def _least_change(verifier: Verifier, kept: list, last: dict) -> tuple | None:
    """The edge of `kept` whose removal changes the outputs least while the rest agrees, ties to the earliest in
    `kept`; (edge, deviation), or None when every removal breaks the circuit.

    Removals are tried in the order of their deviations in the previous round (`last`, updated here), which is
    usually close to this round's: the best removal is found early, and a run that shows a removal cannot beat it
    stops there. The choice is the one trying them in `kept` order gives."""
    position = {e: i for i, e in enumerate(kept)}
    best = None
    for edge in sorted(kept, key=lambda e: (last.get(e, 0.0), position[e])):
        if best is None:
            limit = verifier.tolerance
        elif position[edge] < position[best[0]]:  # an equal change wins here: stop only past the best
            limit = best[1]
        elif best[1] == 0.0:  # nothing after the best in `kept` can change less than nothing
            continue
        else:
            limit = math.nextafter(best[1], -math.inf)
        deviation = last[edge] = verifier.deviation([e for e in kept if e != edge], limit)
        if deviation <= verifier.tolerance and (best is None or deviation < best[1] or (
                deviation == best[1] and position[edge] < position[best[0]])):
            best = (edge, deviation)
    return best


def ground_truth(model: CompiledModel, ablation: str) -> dict:
    """The verified ground-truth circuit of one ablation: edges, dropped structural edges with reasons, checks."""
    structural = structural_edges(model)
    verifier = Verifier(model, ablation)
    if not verifier.agrees(structural):
        raise RuntimeError(f"{model.name}: the structural edges do not reproduce the model under {ablation}")
    alone = {e: verifier.deviation([x for x in structural if x != e]) for e in structural}
    kept, dropped = eliminate(verifier, structural, alone=alone)
    other, _ = eliminate(verifier, structural, reverse_ties=True, alone=alone)
    return {
        "edges": [list(e) for e in kept],
        "carries": {f"{w} -> {r}": structural[(w, r)] for w, r in kept},
        "dropped": [{"edge": list(edge), "carries": structural[edge], "deviation": deviation,
                     "reason": _reason(edge, structural, ablation, deviation, model.categorical)}
                    for edge, deviation in dropped],
        "structural_edges": len(structural),
        "checked_on": int(verifier.ids.shape[0]),
        "criterion": (f"the full model's decoded output at every real position after BOS, with KL(full || circuit)"
                      f" of the output distribution at most {KL_TOLERANCE} nats" if model.categorical
                      else f"outputs at every real position after BOS within {TOLERANCE} of the full model"),
        "rule": "backward elimination from the structural edges, least change first (ties by edge name)",
        # the same rule with name ties broken the other way, where that ends elsewhere (an exact symmetry, e.g. two
        # heads that compute the same thing): an equally valid circuit, accepted as exact by `recover`
        "equivalent": [] if other == kept else [[list(e) for e in other]],
    }


def eliminate_in_list_order(verifier: Verifier, edges) -> frozenset:
    """The rule before 2026-11-27, kept to show why it was replaced: passes over `edges` in their order, dropping
    each edge whose removal still agrees with the full model, until a pass drops nothing. Its answer can depend
    on the order (`bench/recovery_probe.py orders`)."""
    kept, changed = list(edges), True
    while changed:
        changed = False
        for edge in list(kept):
            if verifier.agrees([e for e in kept if e != edge]):
                kept.remove(edge)
                changed = True
    return frozenset(kept)


def matching_truth(recorded: dict, found: set) -> set:
    """The recorded truth a found circuit is compared with: the equivalent circuit it equals, if any (an exact
    symmetry of the program), otherwise the truth itself."""
    circuits = [{tuple(e) for e in c} for c in [recorded["edges"], *recorded.get("equivalent", [])]]
    return next((c for c in circuits if c == found), circuits[0])


def _reason(edge, structural, ablation: str, deviation: float, categorical: bool) -> str:
    carried = ", ".join(structural[edge])
    how = {"interchange": "taken from the corrupted partner", "mean": "replaced by its per-position mean"}.get(
        ablation, "zeroed")
    change = ("changes no output" if deviation == 0 else
              f"changes no output distribution by more than {deviation:.1e} nats" if categorical else
              f"changes no output by more than {deviation:.1e}")
    return f"carries [{carried}]; {how}, with the edges dropped before it already gone, it {change}"
