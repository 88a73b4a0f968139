"""A circuit: a binary edge set of a model's component graph, its extraction from masks, and its JSON file.

Extraction rule. An edge is kept when its deterministic hard-concrete mask exceeds 1/2, which is exactly
`log_alpha > 0` (a fixed threshold: the learned sparsity is not used). With node masks, an edge is kept only when
its writer's node mask passes the same threshold (edge and node thresholds are the same number, so they cannot be
swapped). Then dangling edges are dropped: an edge whose reader feeds no writer that reaches the output through
kept edges, and, under interchange and resample ablation, an edge whose writer no input reaches through kept
edges (there such a writer outputs exactly its ablated value; see `prune_dangling`). The count of dropped edges
is reported.

Last (`epverify.eval.extraction`, with the config's tolerance: `eval.redundancy.drop_redundant`), a pass over the
model removes the edges the deterministic circuit does not need: in ascending order of log-alpha, an edge is
removed when the circuit without it is as faithful as the extracted one, within a tolerance. Stochastic gates make an
edge that duplicates a kept route worth something in training (it stands in when that route's gate is sampled
shut); the binary circuit has no such use for it. The count is reported as `dropped_redundant`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core import hard_concrete
from ..core.graph import OUTPUT, ComponentGraph
from ..errors import EpverifyError
from . import atomic

FORMAT = "epverify.circuit/1"


def prune_dangling(graph: ComponentGraph, kept: set[tuple[str, str]],
                   ablation: str = "interchange") -> set[tuple[str, str]]:
    """The kept edges that lie on some path from a source to the output.

    Under interchange and resample ablation the sources are the embeddings: a writer none of whose inputs is
    kept reads exactly the ablated residual, so it outputs exactly its ablated value and its outgoing edges change
    nothing. Under zero and mean ablation that is not so (a head reading the mean residual does not output its
    mean output), so every writer is a source and only edges that reach no output are dropped.
    """

    def targets(reader: str) -> tuple[str, ...]:  # what a reader feeds: writers, or the output itself
        return graph.reader_nodes(reader) or (OUTPUT,)

    incoming: dict[str, set[str]] = {}
    feeds: dict[str, set[str]] = {}
    for w, r in kept:
        for node in targets(r):
            incoming.setdefault(node, set()).add(w)
            feeds.setdefault(w, set()).add(node)
    reached = set(graph.embed_names) if ablation in ("interchange", "resample") else set(graph.writers)
    for writer in graph.writers:  # writer order is topological
        if writer not in reached and incoming.get(writer, set()) & reached:
            reached.add(writer)
    useful = {OUTPUT}
    for writer in reversed(graph.writers):
        if feeds.get(writer, set()) & useful:
            useful.add(writer)
    return {(w, r) for w, r in kept if w in reached and w in useful and set(targets(r)) & useful}


@dataclass
class Circuit:
    edges: list[tuple[str, str]]
    total_edges: int
    model: dict = field(default_factory=dict)
    ablation: str = "interchange"
    metrics: dict = field(default_factory=dict)
    dropped_dangling: int = 0
    # Optional per-edge scores, kept or not (e.g. `epverify.io.export.mask_scores`, or an attribution score from
    # another tool); empty when the circuit is only an edge set. Written as "scores": [[w, r, s], ...].
    scores: dict[tuple[str, str], float] = field(default_factory=dict)
    dropped_redundant: int = 0  # removed by `epverify.eval.redundancy.drop_redundant`

    @property
    def nodes(self) -> list[str]:
        names = {w for w, _ in self.edges} | {r for _, r in self.edges}
        return sorted(names)

    @property
    def sparsity(self) -> float:
        return 1.0 - len(self.edges) / self.total_edges if self.total_edges else 0.0

    @classmethod
    def from_masks(cls, graph: ComponentGraph, edge_log_alpha: torch.Tensor,
                   node_log_alpha: torch.Tensor | None = None, **info) -> Circuit:
        """Apply the extraction rule (module docstring) to trained log-alphas."""
        keep = hard_concrete.keep(edge_log_alpha.detach().cpu())
        if node_log_alpha is not None:
            keep = keep & hard_concrete.keep(node_log_alpha.detach().cpu())[torch.tensor(graph.edge_writer)]
        kept = {graph.edges[i] for i in torch.nonzero(keep).flatten().tolist()}
        final = prune_dangling(graph, kept, info.get("ablation", "interchange"))
        order = graph.edge_index
        return cls(sorted(final, key=order.__getitem__), graph.num_edges,
                   dropped_dangling=len(kept) - len(final), **info)

    def mask(self, graph: ComponentGraph) -> torch.Tensor:
        """Binary edge mask (num_edges,) for this circuit in `graph`; edges unknown to the graph are an error."""
        if self.total_edges != graph.num_edges:
            raise EpverifyError(
                f"this circuit was made for a graph of {self.total_edges} edges but the model has"
                f" {graph.num_edges}: load it with the model it was found in"
            )
        mask = torch.zeros(graph.num_edges)
        try:
            mask[graph.index_of(self.edges)] = 1.0
        except KeyError as err:
            raise EpverifyError(str(err.args[0])) from None
        return mask

    # ----- JSON ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "ablation": self.ablation,
            "edges": [list(e) for e in self.edges],
            "nodes": self.nodes,
            "total_edges": self.total_edges,
            "sparsity": self.sparsity,
            "dropped_dangling": self.dropped_dangling,
            "dropped_redundant": self.dropped_redundant,
            "metrics": self.metrics,
            **({"scores": [[w, r, s] for (w, r), s in self.scores.items()]} if self.scores else {}),
        }

    def to_json(self, path: str | Path) -> Path:
        """Write atomically: a reader never sees a half-written circuit."""
        return atomic.write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> Circuit:
        return cls.from_dict(read_json(path), source=str(path))

    @classmethod
    def from_dict(cls, data, source: str = "circuit") -> Circuit:
        """A circuit from the dict `to_dict` writes; `source` names it in errors."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise EpverifyError(f"{source} is not an epverify circuit: expected \"format\": \"{FORMAT}\"")
        try:
            edges = [(str(w), str(r)) for w, r in data["edges"]]
            scores = {(str(w), str(r)): float(s) for w, r, s in data.get("scores", [])}
            return cls(edges, int(data["total_edges"]), data.get("model", {}), data.get("ablation", "interchange"),
                       data.get("metrics", {}), int(data.get("dropped_dangling", 0)), scores,
                       int(data.get("dropped_redundant", 0)))
        except (KeyError, TypeError, ValueError) as err:
            raise EpverifyError(f"{source}: malformed circuit ({err!r}); expected edges as [writer, reader] pairs"
                                " and scores as [writer, reader, score] triples") from None


def read_json(path: str | Path):
    """The parsed contents of a circuit file (any format), or a one-line error for a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise EpverifyError(f"circuit file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EpverifyError(f"{path} is not a JSON circuit file ({err}); a truncated file is usually an interrupted"
                            " write: produce it again") from None


# ----- circuits and model graphs -------------------------------------------------------------------------------
def graph_of(circuit: Circuit) -> ComponentGraph:
    """The component graph a circuit was found in, rebuilt from the model summary its file records."""
    m = circuit.model or {}
    missing = [k for k in ("n_layers", "n_heads", "embed_names") if k not in m]
    if missing:
        raise EpverifyError(
            f"the circuit does not record its model's shape ({', '.join(missing)} missing from \"model\"):"
            " pass the model, or use a circuit written by epverify prune or recover"
        )
    try:
        graph = ComponentGraph(int(m["n_layers"]), int(m["n_heads"]), int(m.get("n_kv_heads", m["n_heads"])),
                               tuple(str(e) for e in m["embed_names"]), bool(m.get("parallel_mlp", False)))
    except (TypeError, ValueError) as err:
        raise EpverifyError(f"the circuit's \"model\" record is malformed ({err})") from None
    if circuit.total_edges and graph.num_edges != circuit.total_edges:
        raise EpverifyError(
            f"the circuit says its model has {circuit.total_edges} edges but its recorded shape has"
            f" {graph.num_edges}: the file is inconsistent"
        )
    return graph


def check_fits(circuit: Circuit, graph: ComponentGraph, source: str = "the circuit") -> None:
    """Raise a one-line EpverifyError naming every difference when `circuit` was made for another model."""
    m = circuit.model or {}
    diffs = []
    for key, label in (("n_layers", "layers"), ("n_heads", "heads"), ("n_kv_heads", "key/value heads")):
        if key in m and int(m[key]) != getattr(graph, key):
            diffs.append(f"{m[key]} {label} (this model: {getattr(graph, key)})")
    if "embed_names" in m and tuple(m["embed_names"]) != graph.embed_names:
        diffs.append(f"embeddings {', '.join(m['embed_names'])} (this model: {', '.join(graph.embed_names)})")
    if "parallel_mlp" in m and bool(m["parallel_mlp"]) != graph.parallel_mlp:
        diffs.append(f"parallel_mlp={bool(m['parallel_mlp'])} (this model: {graph.parallel_mlp})")
    if circuit.total_edges != graph.num_edges:
        diffs.append(f"{circuit.total_edges} edges (this model: {graph.num_edges})")
    if diffs:
        raise EpverifyError(f"{source} was made for a different model: {'; '.join(diffs)}; use it with the model"
                            " it was found in")
    graph.index_of(circuit.edges)
    graph.index_of(circuit.scores)


def reader_kind(reader: str) -> str:
    """q, k, v (attention inputs), mlp or output."""
    if reader == OUTPUT:
        return "output"
    if reader.startswith("m"):
        return "mlp"
    return reader.rsplit(".", 1)[1]
