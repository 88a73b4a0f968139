"""EAP-IG's `Graph` JSON (hannamw/EAP-IG) and MIB's submission layout, both ways.

Names. epverify (docs/design.md, "Names and files") and EAP-IG (hannamw/EAP-IG, `eap/graph.py`) name the same
components:

    epverify writer                                 EAP-IG node
    embeddings (tok_embeds, pos_embeds / embeds)    input
    a{L}.h{H}, m{L}                                 a{L}.h{H}, m{L}
    epverify reader                                 EAP-IG edge target
    a{L}.h{H}.q|k|v                                 a{L}.h{H}<q|k|v>
    m{L}                                            m{L}
    resid_post                                      logits

so the edge ["m2", "a3.h0.q"] is EAP-IG's "m2->a3.h0<q>". Both graphs have the same edges (every writer feeds
every reader downstream of it; an MLP reads its own layer's heads unless attention and MLP run in parallel),
except for two things EAP-IG's graph does not have:

* several embedding writers (GPT-2's token and position embeddings): EAP-IG has one `input`. On export the edge
  input->R is in the graph when any embedding's edge to R is, with the score of largest magnitude among them; on
  import it stands for every embedding's edge to R.
* grouped-query attention: EAP-IG has a k and a v input per query head. On export a KV head's edge is written
  for every query head of its group; on import the KV head's edge is kept when any of its group's edges is, with
  the score of largest magnitude.

So that epverify -> EAP-IG -> epverify is exact all the same, `to_eap_ig` also stores the circuit itself under the
top-level key "epverify" (EAP-IG's `Graph.from_json` reads only "cfg", "nodes" and "edges", so the file still
loads there). `from_eap_ig` uses it only while it agrees with the file's edges: a file edited by another tool is
read through the mapping above.

EAP-IG JSON (what `Graph.to_json` writes): {"cfg": {"n_layers", "n_heads", "parallel_attn_mlp", "d_model"},
"nodes": {name: {"in_graph": bool}}, "edges": {name: {"score": float, "in_graph": bool}}}, every node and edge of
the model. Edge scores: the circuit's `scores` where it has them (0.0 for edges without one); a circuit without
scores is written with score 1.0 on its edges and 0.0 elsewhere, so that EAP-IG's `apply_topn` keeps its edges
first.

MIB (the circuit-localization track of the Mechanistic Interpretability Benchmark, MIB-shared-task README,
"Submitting to the MIB Leaderboard"): one folder per task and model named `{task}_{model}` (e.g. `ioi_gpt2`)
holding a single .json or .pt file of floating-point importance scores for every edge of the model, in EAP-IG's
Graph format (MIB loads it with `Graph.from_json` and ranks edges by absolute score with `apply_topn` at
0.1% ... 100% of the edges). `write_mib` writes `{out}/{task}_{model}/importances.json`: the EAP-IG JSON above
with the extension key left out. Scores should rank every edge: `mask_scores` turns trained log-alphas into
sigmoid(log_alpha), in (0, 1) and above 1/2 exactly for the edges the extraction rule keeps.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from ..core.graph import ComponentGraph
from ..errors import EpverifyError
from . import atomic
from .circuit import Circuit, check_fits, graph_of, reader_kind

EAP_INPUT = "input"
EAP_LOGITS = "logits"
EAP_KEYS = ("cfg", "nodes", "edges")
EXTENSION_KEY = "epverify"
READER_KINDS = ("q", "k", "v", "mlp", "output")

_EAP_NODE = re.compile(r"^(input|logits|a(\d+)\.h(\d+)|m(\d+))$")


# ----- EAP-IG ---------------------------------------------------------------------------------------------------
def _eap_writer(graph: ComponentGraph, writer: str) -> str:
    return EAP_INPUT if writer in graph.embed_names else writer


def _eap_targets(graph: ComponentGraph, reader: str) -> list[str]:
    kind = reader_kind(reader)
    if kind == "output":
        return [EAP_LOGITS]
    if kind == "mlp":
        return [reader]
    return [f"{head}<{kind}>" for head in graph.reader_nodes(reader)]


def eap_edge_groups(graph: ComponentGraph) -> dict[str, list[tuple[str, str]]]:
    """Every EAP-IG edge name of the model, with the epverify edges it stands for (in epverify's edge order)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for w, r in graph.edges:
        source = _eap_writer(graph, w)
        for target in _eap_targets(graph, r):
            groups.setdefault(f"{source}->{target}", []).append((w, r))
    return groups


def eap_ig_edge_order(graph: ComponentGraph) -> list[str]:
    """EAP-IG's edge names in the order its `Graph.from_model` adds them (hannamw/EAP-IG, eap/graph.py): per layer,
    every residual node to every head's q, k, v (head by head), then every residual node (the layer's heads
    included, unless attention and MLP run in parallel) to the MLP; last, every node to the logits. MIB's
    `apply_topn` sorts edges stably, so this order breaks its ties."""
    names, residual = [], [EAP_INPUT]
    for layer in range(graph.n_layers):
        heads = [f"a{layer}.h{h}" for h in range(graph.n_heads)]
        mlp = f"m{layer}"
        for node in residual:
            names += [f"{node}->{head}<{x}>" for head in heads for x in "qkv"]
            if graph.parallel_mlp:
                names.append(f"{node}->{mlp}")
        residual = residual + heads
        if not graph.parallel_mlp:
            names += [f"{node}->{mlp}" for node in residual]
        residual.append(mlp)
    return names + [f"{node}->{EAP_LOGITS}" for node in residual]


def mib_tie_order(graph: ComponentGraph) -> torch.Tensor:
    """(num_edges,) for every epverify edge, the position of its (first) EAP-IG edge in `eap_ig_edge_order`: the
    tie-break that makes a ranking of epverify's edges the one MIB makes of the exported scores."""
    position = {name: i for i, name in enumerate(eap_ig_edge_order(graph))}
    first: dict[tuple[str, str], int] = {}
    for name, edges in eap_edge_groups(graph).items():
        for edge in edges:
            first[edge] = min(first.get(edge, len(position)), position[name])
    return torch.tensor([first[e] for e in graph.edges])


def _largest(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return max(values, key=abs) if values else None


def to_eap_ig(circuit: Circuit, graph: ComponentGraph | None = None, extension: bool = True) -> dict:
    """The circuit as EAP-IG's `Graph.to_json` dict (module docstring); with `extension`, the circuit itself
    under "epverify" so that `from_eap_ig` gives it back exactly."""
    graph = graph or graph_of(circuit)
    check_fits(circuit, graph)
    kept = set(circuit.edges)
    edges = {}
    for name, members in eap_edge_groups(graph).items():
        in_graph = any(m in kept for m in members)
        if circuit.scores:
            score = _largest([circuit.scores.get(m) for m in members])
            score = 0.0 if score is None else float(score)
        else:
            score = 1.0 if in_graph else 0.0
        edges[name] = {"score": score, "in_graph": in_graph}
    writing = {_eap_writer(graph, w) for w, _ in circuit.edges}
    nodes = {_eap_writer(graph, w): None for w in graph.writers}
    nodes = {name: {"in_graph": name in writing} for name in nodes}
    nodes[EAP_LOGITS] = {"in_graph": True}
    cfg = {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "parallel_attn_mlp": graph.parallel_mlp}
    if "d_model" in (circuit.model or {}):
        cfg["d_model"] = int(circuit.model["d_model"])
    if graph.n_kv_heads != graph.n_heads:  # not read by EAP-IG; lets epverify refuse a model of another shape
        cfg["n_key_value_heads"] = graph.n_kv_heads
    data = {"cfg": cfg, "nodes": nodes, "edges": edges}
    if extension:
        data[EXTENSION_KEY] = circuit.to_dict()
    return data


def write_eap_ig(circuit: Circuit, path: str | Path, graph: ComponentGraph | None = None) -> Path:
    """`to_eap_ig` written as JSON (atomically); EAP-IG loads it with `Graph.from_json(path)`."""
    data = to_eap_ig(circuit, graph)
    return atomic.write_file(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(data) + "\n"))


def is_eap_ig(data) -> bool:
    """Whether parsed JSON looks like an EAP-IG Graph (cfg, nodes, edges; no epverify "format")."""
    return isinstance(data, dict) and all(k in data for k in EAP_KEYS) and "format" not in data


def _eap_cfg(data: dict, source: str) -> dict:
    cfg = data["cfg"]
    try:
        out = {"n_layers": int(cfg["n_layers"]), "n_heads": int(cfg["n_heads"]),
               "parallel_attn_mlp": bool(cfg.get("parallel_attn_mlp", False))}
        for key in ("d_model", "n_key_value_heads"):
            if cfg.get(key) is not None:
                out[key] = int(cfg[key])
    except (KeyError, TypeError, ValueError) as err:
        raise EpverifyError(f"{source}: EAP-IG \"cfg\" needs integer n_layers and n_heads ({err!r})") from None
    return out


def _check_eap_shape(cfg: dict, graph: ComponentGraph, d_model: int | None, source: str) -> None:
    diffs = []
    if cfg["n_layers"] != graph.n_layers:
        diffs.append(f"{cfg['n_layers']} layers (this model: {graph.n_layers})")
    if cfg["n_heads"] != graph.n_heads:
        diffs.append(f"{cfg['n_heads']} heads (this model: {graph.n_heads})")
    if cfg.get("n_key_value_heads", graph.n_kv_heads) != graph.n_kv_heads:
        diffs.append(f"{cfg['n_key_value_heads']} key/value heads (this model: {graph.n_kv_heads})")
    if cfg["parallel_attn_mlp"] != graph.parallel_mlp:
        diffs.append(f"parallel_attn_mlp={cfg['parallel_attn_mlp']} (this model: {graph.parallel_mlp})")
    if d_model is not None and cfg.get("d_model", d_model) != d_model:
        diffs.append(f"d_model {cfg['d_model']} (this model: {d_model})")
    if diffs:
        raise EpverifyError(f"{source} is an EAP-IG graph of a different model: {'; '.join(diffs)}; use it with"
                            " the model it was found in")


def _edge_info(name: str, info, source: str) -> tuple[bool, float | None]:
    if isinstance(info, bool):  # a bare membership flag
        return info, None
    if not isinstance(info, dict):
        raise EpverifyError(f"{source}: edge {name!r} should map to {{\"score\": float, \"in_graph\": bool}}")
    score = info.get("score")
    try:
        score = None if score is None else float(score)
    except (TypeError, ValueError):
        raise EpverifyError(f"{source}: edge {name!r} has a score that is not a number: {score!r}") from None
    if score is not None and math.isnan(score):
        score = None
    return bool(info.get("in_graph", False)), score


def from_eap_ig(data: dict, graph: ComponentGraph | None = None, d_model: int | None = None,
                source: str = "the EAP-IG graph") -> Circuit:
    """A circuit from an EAP-IG Graph JSON dict, mapped onto `graph` (the model's; module docstring).

    Without `graph`: the circuit stored by `to_eap_ig` when there is one, else a graph built from "cfg" with one
    embedding named `input`. A graph of another shape (layers, heads, parallel MLP, d_model, an edge or node
    name it does not have) is refused with an EpverifyError naming the difference.
    """
    if not is_eap_ig(data):
        raise EpverifyError(f"{source} is not an EAP-IG Graph JSON: it needs the keys cfg, nodes and edges")
    if not isinstance(data["edges"], dict) or not isinstance(data["nodes"], dict):
        raise EpverifyError(f"{source}: EAP-IG \"nodes\" and \"edges\" must be objects keyed by name")
    cfg = _eap_cfg(data, source)
    exact = _stored_circuit(data, graph)
    if graph is None:
        graph = graph_of(exact) if exact is not None else ComponentGraph(
            cfg["n_layers"], cfg["n_heads"], cfg.get("n_key_value_heads", cfg["n_heads"]), (EAP_INPUT,),
            cfg["parallel_attn_mlp"])
    _check_eap_shape(cfg, graph, d_model, source)
    if exact is not None and _agrees(exact, graph, data["edges"]):
        return exact

    groups = eap_edge_groups(graph)
    for name in data["nodes"]:
        match = _EAP_NODE.match(str(name))
        layer = None if match is None else next((int(x) for x in (match.group(2), match.group(4)) if x), None)
        head = None if match is None or match.group(3) is None else int(match.group(3))
        if match is None or (layer is not None and layer >= graph.n_layers) or (
                head is not None and head >= graph.n_heads):
            raise EpverifyError(f"{source} names node {name!r}, which a model with {graph.n_layers} layers and"
                                f" {graph.n_heads} heads does not have: it was made for a different model")
    kept: set[tuple[str, str]] = set()
    scores: dict[tuple[str, str], float] = {}
    for name, info in data["edges"].items():
        members = groups.get(name)
        if members is None:
            raise EpverifyError(f"{source} names edge {name!r}, which a model with {graph.n_layers} layers and"
                                f" {graph.n_heads} heads does not have: it was made for a different model")
        in_graph, score = _edge_info(name, info, source)
        if in_graph:
            kept.update(members)
        if score is not None:
            for m in members:
                if m not in scores or abs(score) > abs(scores[m]):
                    scores[m] = score
    order = graph.edge_index
    model = {**graph.summary(), "source": "eap-ig"}
    if "d_model" in cfg:
        model["d_model"] = cfg["d_model"]
    return Circuit(sorted(kept, key=order.__getitem__), graph.num_edges, model=model, scores=scores)


def _stored_circuit(data: dict, graph: ComponentGraph | None) -> Circuit | None:
    """The circuit `to_eap_ig` stored in the file, when there is one that fits `graph`."""
    stored = data.get(EXTENSION_KEY)
    if stored is None:
        return None
    try:
        circuit = Circuit.from_dict(stored)
        check_fits(circuit, graph or graph_of(circuit))
    except EpverifyError:
        return None
    return circuit


def _agrees(circuit: Circuit, graph: ComponentGraph, edges: dict) -> bool:
    """Whether the file's EAP-IG edges are still exactly what `circuit` exports to (nobody edited them)."""
    try:
        return to_eap_ig(circuit, graph, extension=False)["edges"] == edges
    except EpverifyError:
        return False


# ----- MIB ------------------------------------------------------------------------------------------------------
_MIB_NAME = re.compile(r"^[A-Za-z0-9.\-]+$")


def write_mib(circuit: Circuit, out_dir: str | Path, task: str, model_name: str,
              graph: ComponentGraph | None = None) -> Path:
    """Write `{out_dir}/{task}_{model_name}/importances.json`: MIB's edge-importance submission (module
    docstring). A circuit without scores is written with 1.0 on its edges and 0.0 elsewhere."""
    for label, value in (("task", task), ("model name", model_name)):
        if not value or not _MIB_NAME.match(value):
            raise EpverifyError(f"MIB {label} {value!r} must be letters, digits, '-' or '.' (e.g. ioi, gpt2): MIB"
                                " names a submission folder {task}_{model}")
    data = to_eap_ig(circuit, graph, extension=False)
    path = Path(out_dir) / f"{task}_{model_name}" / "importances.json"
    return atomic.write_file(path, lambda tmp: Path(tmp).write_text(json.dumps(data) + "\n"))
