"""Ground-truth circuits of compiled programs: structural edges, then verified by exhaustive ablation.

1. Structure. Every block of a compiled model reads and writes labelled residual directions. A writer writes the
   directions its output weights touch (embedding rows, a head's output projection, an MLP's second layer); a
   reader reads the directions its input weights touch (a head's query, key or value projection, an MLP's first
   layer, the unembedding). An edge is structural when the writer writes a direction the reader reads; the JSON
   records the directions it carries. Any other edge changes only directions its reader ignores: it is exactly
   inert.
2. Verification, per ablation, with the oracle (`epverify.oracle`) on the program's whole dataset. An output is
   the unembedded vector at every real position after BOS; two runs agree when they differ nowhere by more than
   `TOLERANCE`. Starting from the structural set, each edge in edge order is dropped when the circuit without it
   still reproduces the full model on every input (the reason is recorded: e.g. the edge carries only directions
   that are the same in clean and corrupted inputs). What is left is sufficient (it reproduces the full model)
   and every edge in it is necessary (removing it alone changes some output); both are checked at the end.
"""

from __future__ import annotations

import torch

from ..adapters.tracr import TracrAdapter
from ..oracle import run_with_edges
from .data import dataset
from .model import CompiledModel

TOLERANCE = 1e-3
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
    """Runs the oracle on a program's dataset and compares with the full model."""

    def __init__(self, model: CompiledModel, ablation: str):
        self.model, self.ablation = model, ablation
        self.adapter = TracrAdapter(model)
        clean, corrupted = dataset(model.dataset)
        self.ids, self.mask = model.encode(clean)
        self.corrupted_ids, _ = model.encode(corrupted)
        full = run_with_edges(self.adapter, self.ids, self.adapter.graph.edges, "zero", self.mask)
        self.full = full
        self.positions = self.mask.bool().clone()
        self.positions[:, 0] = False  # BOS is not an output

    def outputs(self, edges) -> torch.Tensor:
        return run_with_edges(
            self.adapter, self.ids, edges, self.ablation, self.mask, self.corrupted_ids, (self.ids, self.mask)
        )

    def agrees(self, edges) -> bool:
        diff = (self.outputs(edges) - self.full).abs().amax(-1)
        return bool((diff[self.positions] <= TOLERANCE).all())


def ground_truth(model: CompiledModel, ablation: str) -> dict:
    """The verified ground-truth circuit of one ablation: edges, dropped structural edges with reasons, checks."""
    structural = structural_edges(model)
    verifier = Verifier(model, ablation)
    if not verifier.agrees(structural):
        raise RuntimeError(f"{model.name}: the structural edges do not reproduce the model under {ablation}")
    kept = list(structural)
    dropped = []
    changed = True
    while changed:  # greedy passes until every remaining edge is necessary
        changed = False
        for edge in list(kept):
            trial = [e for e in kept if e != edge]
            if verifier.agrees(trial):
                kept, changed = trial, True
                dropped.append({"edge": list(edge), "carries": structural[edge],
                                "reason": _reason(edge, structural, ablation)})
    return {
        "edges": [list(e) for e in kept],
        "carries": {f"{w} -> {r}": structural[(w, r)] for w, r in kept},
        "dropped": dropped,
        "structural_edges": len(structural),
        "checked_on": int(verifier.ids.shape[0]),
        "criterion": f"outputs at every real position after BOS within {TOLERANCE} of the full model",
    }


def _reason(edge, structural, ablation: str) -> str:
    carried = ", ".join(structural[edge])
    if ablation == "interchange":
        return (f"carries [{carried}], which never changes an output when taken from the corrupted partner:"
                " the values are the same in clean and corrupted inputs or do not reach the output")
    if ablation == "mean":
        return f"carries [{carried}], which never changes an output when replaced by its per-position mean"
    return f"carries [{carried}], which never changes an output when zeroed"
