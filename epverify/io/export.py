"""Circuits to other tools and back: networkx and GraphML here, EAP-IG's `Graph` JSON and MIB's submission
layout in `epverify.io.eap_ig`, and any circuit file read whatever its format.

    from epverify.io import export
    g = export.to_networkx(circuit)                 # nx.DiGraph: components and q/k/v inputs as nodes
    export.write_graphml(circuit, "circuit.graphml")
    export.write_eap_ig(circuit, "circuit.eap.json")  # loads with EAP-IG's Graph.from_json
    circuit = export.load_circuit("any.json", graph)  # epverify's JSON or EAP-IG's, mapped onto `graph`
    export.write_mib(circuit, "submission", task="ioi", model_name="gpt2")  # submission/ioi_gpt2/importances.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core.graph import OUTPUT, ComponentGraph
from ..errors import EpverifyError
from . import atomic
from .circuit import FORMAT, Circuit, check_fits, graph_of, read_json, reader_kind
from .eap_ig import from_eap_ig, is_eap_ig, to_eap_ig, write_eap_ig, write_mib

__all__ = ["check_fits", "from_eap_ig", "graph_of", "load_circuit", "mask_scores", "node_info", "read_circuit_file",
           "reader_kind", "to_eap_ig", "to_networkx", "write_eap_ig", "write_graphml", "write_mib"]


def node_info(graph: ComponentGraph, name: str) -> dict:
    """kind and layer of a node of `to_networkx` (and head, for heads and their q/k/v inputs): embeddings are
    layer -1 and the output layer n_layers."""
    if name in graph.embed_names:
        return {"kind": "embed", "layer": -1}
    if name == OUTPUT:
        return {"kind": "output", "layer": graph.n_layers}
    if name.startswith("m"):
        return {"kind": "mlp", "layer": int(name[1:])}
    parts = name.split(".")
    info = {"kind": "head" if len(parts) == 2 else parts[2], "layer": int(parts[0][1:]), "head": int(parts[1][1:])}
    return info


def mask_scores(graph: ComponentGraph, edge_log_alpha: torch.Tensor) -> dict[tuple[str, str], float]:
    """Edge scores from trained log-alphas: sigmoid(log_alpha), above 1/2 exactly where the extraction rule keeps
    the edge. Pass them on: `Circuit.from_masks(graph, log_alpha, scores=mask_scores(graph, log_alpha))`."""
    values = torch.sigmoid(edge_log_alpha.detach().float().cpu()).tolist()
    if len(values) != graph.num_edges:
        raise EpverifyError(f"{len(values)} log-alphas for a graph of {graph.num_edges} edges")
    return dict(zip(graph.edges, values))


# ----- networkx and GraphML ------------------------------------------------------------------------------------
def to_networkx(circuit: Circuit, graph: ComponentGraph | None = None):
    """The circuit as a networkx DiGraph.

    Nodes: the writers (embeddings, heads `a{L}.h{H}`, MLPs `m{L}`), the attention inputs `a{L}.h{H}.q|k|v`, and
    the output `resid_post`, each with `kind` (embed, head, mlp, q, k, v, output), `layer` (-1 for embeddings,
    n_layers for the output) and, for heads and their inputs, `head`. An MLP's input and output are one node.
    Edges: every circuit edge [writer, reader] as writer -> reader, with `kind` (the reader's: q, k, v, mlp or
    output), `reader` and, when the circuit has one, `score`; plus, inside each head, its q/k/v inputs -> the
    head with kind "internal" (not circuit edges: they keep paths from the embeddings to the output connected).
    Graph attributes: format, ablation, total_edges, kept_edges, sparsity, model (a JSON string).
    """
    import networkx as nx

    graph = graph or graph_of(circuit)
    g = nx.DiGraph(format=FORMAT, ablation=circuit.ablation, total_edges=circuit.total_edges,
                   kept_edges=len(circuit.edges), sparsity=circuit.sparsity, model=json.dumps(circuit.model))
    for w, r in circuit.edges:
        for name in (w, r):
            if name not in g:
                g.add_node(name, **node_info(graph, name))
        attrs = {"kind": reader_kind(r), "reader": r}
        if (w, r) in circuit.scores:
            attrs["score"] = float(circuit.scores[(w, r)])
        g.add_edge(w, r, **attrs)
        if attrs["kind"] in ("q", "k", "v"):
            for head in graph.reader_nodes(r):
                if head not in g:
                    g.add_node(head, **node_info(graph, head))
                g.add_edge(r, head, kind="internal", reader=r)
    return g


def write_graphml(circuit: Circuit, path: str | Path, graph: ComponentGraph | None = None) -> Path:
    """`to_networkx` written with networkx.write_graphml (atomically)."""
    import networkx as nx

    g = to_networkx(circuit, graph)
    path = Path(path)
    return atomic.write_file(path, lambda tmp: nx.write_graphml(g, tmp))


# ----- any circuit file ----------------------------------------------------------------------------------------
def load_circuit(path: str | Path, graph: ComponentGraph | None = None, d_model: int | None = None) -> Circuit:
    """Read a circuit file whatever made it: epverify's circuit JSON or an EAP-IG Graph JSON (told apart by their
    content). With `graph`, the circuit is checked against (or, for EAP-IG, mapped onto) that model's graph."""
    return read_circuit_file(path, graph, d_model)[0]


def read_circuit_file(path: str | Path, graph: ComponentGraph | None = None,
                      d_model: int | None = None) -> tuple[Circuit, str]:
    """`load_circuit`, and which format the file was in: "epverify" or "eap-ig"."""
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and "format" in data:
        circuit = Circuit.from_dict(data, source=str(path))
        if graph is not None:
            check_fits(circuit, graph, source=str(path))
        return circuit, "epverify"
    if is_eap_ig(data):
        return from_eap_ig(data, graph, d_model, source=str(path)), "eap-ig"
    raise EpverifyError(f"{path} is neither an epverify circuit (\"format\": \"{FORMAT}\") nor an EAP-IG Graph"
                        " JSON (keys cfg, nodes, edges)")


