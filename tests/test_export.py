"""Exports: networkx, GraphML, EAP-IG's Graph JSON (both ways) and MIB's submission layout."""

import json
import random

import networkx as nx
import pytest
import torch

from epverify.adapters.registry import families, family
from epverify.core.graph import ComponentGraph
from epverify.errors import EpverifyError
from epverify.io import export
from epverify.io.circuit import Circuit

GPT2_LIKE = ComponentGraph(2, 3, 3, ("tok_embeds", "pos_embeds"))
LLAMA_MHA = ComponentGraph(2, 4, 4, ("embeds",))
LLAMA_GQA = ComponentGraph(3, 4, 2, ("embeds",))
NEOX_PARALLEL = ComponentGraph(2, 2, 2, ("embeds",), parallel_mlp=True)


def _circuit(graph, fraction=0.3, seed=0, scores=True):
    rng = random.Random(seed)
    edges = [e for e in graph.edges if rng.random() < fraction]
    return Circuit(edges, graph.num_edges, model={**graph.summary(), "d_model": 16, "family": "test"},
                   ablation="zero", metrics={"kl": 0.5},
                   scores={e: rng.uniform(-1, 1) for e in graph.edges} if scores else {})


def _eap_ig_reference_names(n_layers, n_heads, parallel):
    """Edge names exactly as EAP-IG's Graph.from_model enumerates them (hannamw/EAP-IG, eap/graph.py)."""
    names, residual = [], ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        for node in residual:
            names += [f"{node}->{h}<{x}>" for h in heads for x in "qkv"]
            if parallel:
                names.append(f"{node}->m{layer}")
        residual = residual + heads
        if not parallel:
            names += [f"{node}->m{layer}" for node in residual]
        residual.append(f"m{layer}")
    return names + [f"{node}->logits" for node in residual]


@pytest.mark.parametrize("graph", [GPT2_LIKE, LLAMA_MHA, LLAMA_GQA, NEOX_PARALLEL])
def test_eap_ig_names_are_exactly_eap_igs_graph(graph):
    data = export.to_eap_ig(_circuit(graph), graph)
    assert sorted(data["edges"]) == sorted(_eap_ig_reference_names(graph.n_layers, graph.n_heads,
                                                                    graph.parallel_mlp))
    heads_and_mlps = [n for layer in range(graph.n_layers)
                      for n in [f"a{layer}.h{h}" for h in range(graph.n_heads)] + [f"m{layer}"]]
    assert list(data["nodes"]) == ["input", *heads_and_mlps, "logits"]  # EAP-IG's Graph.nodes, in its order
    assert data["nodes"]["logits"] == {"in_graph": True}
    assert data["cfg"] == {"n_layers": graph.n_layers, "n_heads": graph.n_heads,
                           "parallel_attn_mlp": graph.parallel_mlp, "d_model": 16,
                           **({"n_key_value_heads": 2} if graph is LLAMA_GQA else {})}
    for info in data["edges"].values():
        assert set(info) == {"score", "in_graph"} and isinstance(info["score"], float)


def test_epverify_edges_map_to_eap_ig_names():
    c = Circuit([("pos_embeds", "a0.h1.k"), ("a0.h2", "a1.h0.q"), ("m0", "m1"), ("m1", "resid_post")],
                GPT2_LIKE.num_edges, model=GPT2_LIKE.summary())
    kept = {n for n, info in export.to_eap_ig(c)["edges"].items() if info["in_graph"]}
    assert kept == {"input->a0.h1<k>", "a0.h2->a1.h0<q>", "m0->m1", "m1->logits"}


@pytest.mark.parametrize("graph", [GPT2_LIKE, LLAMA_MHA, LLAMA_GQA, NEOX_PARALLEL])
def test_round_trip_through_an_eap_ig_file_is_exact(tmp_path, graph):
    circuit = _circuit(graph)
    path = export.write_eap_ig(circuit, tmp_path / "c.eap.json", graph)
    back = export.load_circuit(path, graph)
    assert back.edges == circuit.edges and back.scores == circuit.scores
    assert back.to_dict() == circuit.to_dict()
    assert export.load_circuit(path).edges == circuit.edges  # no model given: the file knows its own


def test_round_trip_through_eap_igs_own_fields_is_exact_where_the_graphs_agree():
    """One embedding and one k/v per head: the EAP-IG fields alone (no epverify extension) carry everything."""
    circuit = _circuit(LLAMA_MHA)
    data = json.loads(json.dumps(export.to_eap_ig(circuit, extension=False)))
    back = export.from_eap_ig(data, LLAMA_MHA)
    assert back.edges == circuit.edges and back.scores == circuit.scores


def test_eap_ig_input_stands_for_every_embedding_and_kv_edges_merge_over_the_group():
    gpt2 = export.to_eap_ig(Circuit([], GPT2_LIKE.num_edges, model=GPT2_LIKE.summary()), extension=False)
    gpt2["edges"]["input->a1.h2<v>"] = {"score": -0.7, "in_graph": True}
    back = export.from_eap_ig(gpt2, GPT2_LIKE)
    assert back.edges == [("tok_embeds", "a1.h2.v"), ("pos_embeds", "a1.h2.v")]
    assert back.scores[("tok_embeds", "a1.h2.v")] == back.scores[("pos_embeds", "a1.h2.v")] == -0.7

    gqa = export.to_eap_ig(Circuit([], LLAMA_GQA.num_edges, model=LLAMA_GQA.summary()), extension=False)
    gqa["edges"]["m0->a1.h0<k>"] = {"score": 0.2, "in_graph": False}
    gqa["edges"]["m0->a1.h1<k>"] = {"score": -0.9, "in_graph": True}  # heads 0 and 1 share KV head 0
    back = export.from_eap_ig(gqa, LLAMA_GQA)
    assert back.edges == [("m0", "a1.h0.k")] and back.scores[("m0", "a1.h0.k")] == -0.9


def test_an_edited_eap_ig_file_is_read_from_its_edges_not_the_stale_extension(tmp_path):
    circuit = _circuit(LLAMA_MHA, scores=False)
    data = export.to_eap_ig(circuit)
    name = "a0.h0->m1"
    data["edges"][name]["in_graph"] = not data["edges"][name]["in_graph"]
    back = export.from_eap_ig(data, LLAMA_MHA)
    assert set(back.edges) ^ set(circuit.edges) == {("a0.h0", "m1")}


def test_eap_ig_graph_of_another_shape_is_refused():
    data = export.to_eap_ig(_circuit(LLAMA_MHA), extension=False)
    with pytest.raises(EpverifyError, match=r"2 layers \(this model: 3\)"):
        export.from_eap_ig(data, ComponentGraph(3, 4, 4, ("embeds",)))
    with pytest.raises(EpverifyError, match=r"4 heads \(this model: 2\)"):
        export.from_eap_ig(data, ComponentGraph(2, 2, 2, ("embeds",)))
    with pytest.raises(EpverifyError, match="parallel_attn_mlp"):
        export.from_eap_ig(data, ComponentGraph(2, 4, 4, ("embeds",), parallel_mlp=True))
    with pytest.raises(EpverifyError, match="d_model 16"):
        export.from_eap_ig(data, LLAMA_MHA, d_model=32)
    data["edges"]["a7.h0->m9"] = {"score": 1.0, "in_graph": True}
    with pytest.raises(EpverifyError, match="a7.h0->m9"):
        export.from_eap_ig(data, LLAMA_MHA)
    # the extension of a circuit for another model is no way around the check
    other = export.to_eap_ig(_circuit(ComponentGraph(3, 4, 4, ("embeds",))))
    with pytest.raises(EpverifyError, match="different model"):
        export.from_eap_ig(other, LLAMA_MHA)


def test_files_that_are_neither_format_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nodes": {}, "edges": {}}))
    with pytest.raises(EpverifyError, match="neither an epverify circuit"):
        export.load_circuit(bad)
    bad.write_text("{not json")
    with pytest.raises(EpverifyError, match="not a JSON circuit"):
        export.load_circuit(bad)
    with pytest.raises(EpverifyError, match="does not exist"):
        export.load_circuit(tmp_path / "missing.json")
    bad.write_text(json.dumps({"cfg": {"n_layers": "two"}, "nodes": {}, "edges": {}}))
    with pytest.raises(EpverifyError, match="n_layers"):
        export.load_circuit(bad)


def test_an_epverify_circuit_for_another_model_is_refused_naming_the_difference(tmp_path):
    path = _circuit(GPT2_LIKE).to_json(tmp_path / "c.json")
    with pytest.raises(EpverifyError, match=r"2 layers \(this model: 3\).*edges"):
        export.load_circuit(path, ComponentGraph(3, 3, 3, ("tok_embeds", "pos_embeds")))
    with pytest.raises(EpverifyError, match="embeddings tok_embeds, pos_embeds"):
        export.load_circuit(path, ComponentGraph(2, 3, 3, ("embeds",)))


def test_networkx_graph_has_kinds_layers_and_scores():
    circuit = _circuit(LLAMA_GQA)
    g = export.to_networkx(circuit)
    scored = [(u, v, d) for u, v, d in g.edges(data=True) if d["kind"] != "internal"]
    assert len(scored) == len(circuit.edges)
    for u, v, d in scored:
        assert d["kind"] == export.reader_kind(v) and d["reader"] == v and d["score"] == circuit.scores[(u, v)]
    assert g.nodes["embeds"] == {"kind": "embed", "layer": -1}
    for name, attrs in g.nodes(data=True):
        if name.startswith("a") and name.count(".") == 2:  # a q/k/v input feeds its head(s) inside the layer
            assert attrs["kind"] in "qkv" and all(g.nodes[h]["kind"] == "head" for h in g.successors(name))
    if ("embeds", "resid_post") in circuit.edges:
        assert g.nodes["resid_post"] == {"kind": "output", "layer": 3}
    assert g.graph["total_edges"] == LLAMA_GQA.num_edges and g.graph["ablation"] == "zero"


def test_graphml_reads_back_with_networkx(tmp_path):
    circuit = _circuit(GPT2_LIKE, fraction=0.5)
    path = export.write_graphml(circuit, tmp_path / "c.graphml")
    g = nx.read_graphml(path)
    assert {(u, v) for u, v, d in g.edges(data=True) if d["kind"] != "internal"} == set(circuit.edges)
    assert g.nodes["a1.h2"]["layer"] == 1 and g.nodes["a1.h2"]["kind"] == "head"
    assert not list(tmp_path.glob("*.tmp"))


def test_mib_submission_layout(tmp_path):
    circuit = _circuit(GPT2_LIKE)
    path = export.write_mib(circuit, tmp_path / "sub", task="ioi", model_name="gpt2")
    assert path == tmp_path / "sub" / "ioi_gpt2" / "importances.json"
    data = json.loads(path.read_text())
    assert set(data) == {"cfg", "nodes", "edges"}  # what MIB's loader (EAP-IG's Graph.from_json) reads
    assert len(data["edges"]) == len(_eap_ig_reference_names(2, 3, False))
    assert all(isinstance(e["score"], float) for e in data["edges"].values())
    with pytest.raises(EpverifyError, match="task"):
        export.write_mib(circuit, tmp_path / "sub", task="ioi/x", model_name="gpt2")


def test_mask_scores_rank_kept_edges_above_one_half_and_survive_json(tmp_path):
    log_alpha = torch.linspace(-3, 3, LLAMA_MHA.num_edges)
    scores = export.mask_scores(LLAMA_MHA, log_alpha)
    circuit = Circuit.from_masks(LLAMA_MHA, log_alpha, model=LLAMA_MHA.summary(), scores=scores)
    assert all((scores[e] > 0.5) == (float(a) > 0) for e, a in zip(LLAMA_MHA.edges, log_alpha))
    assert all(scores[e] > 0.5 for e in circuit.edges)
    back = Circuit.from_json(circuit.to_json(tmp_path / "c.json"))
    assert back.scores == circuit.scores and back.edges == circuit.edges


@pytest.mark.parametrize("name", sorted(families()))
def test_every_registered_family_exports_eap_ig_names_and_reads_them_back(tmp_path, name):
    """A circuit found in any family's model names its edges as EAP-IG does and round-trips exactly."""
    from epverify.adapters import wrap

    adapter = wrap(family(name).tiny_model()).adapter
    graph = adapter.graph
    rng = random.Random(name)
    circuit = Circuit([e for e in graph.edges if rng.random() < 0.3], graph.num_edges, model=adapter.summary(),
                      ablation="interchange")
    data = export.to_eap_ig(circuit, graph)
    assert sorted(data["edges"]) == sorted(_eap_ig_reference_names(graph.n_layers, graph.n_heads,
                                                                    graph.parallel_mlp))
    back = export.load_circuit(export.write_eap_ig(circuit, tmp_path / "c.eap.json", graph), graph)
    assert back.edges == circuit.edges
