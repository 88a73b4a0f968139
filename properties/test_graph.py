"""The component graph (epverify/graph.py): edge count, edge direction, and edge numbering.

A reader's place in the network, computed here from its name alone: the inputs of layer l's attention sit
before the heads of layer l (after the E embeddings and l layers of H heads + 1 MLP); layer l's MLP input sits
after layer l's heads, or before them when attention and MLP run in parallel (GPT-NeoX); the output after
everything.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from epverify.core.graph import OUTPUT, ComponentGraph, count_edges


@st.composite
def graphs(draw) -> ComponentGraph:
    n_heads = draw(st.integers(1, 8))
    n_kv = draw(st.sampled_from([k for k in range(1, n_heads + 1) if n_heads % k == 0]))
    n_embeds = draw(st.integers(1, 3))
    embeds = ("tok_embeds", "pos_embeds", "extra_embeds")[:n_embeds]
    return ComponentGraph(draw(st.integers(0, 6)), n_heads, n_kv, embeds, draw(st.booleans()))


def reader_position(graph: ComponentGraph, reader: str) -> int:
    """How many writers come before the reader's place in the network (see the module docstring)."""
    if reader == OUTPUT:
        return len(graph.writers)
    layer = int(reader[1:].split(".")[0])
    before_heads = len(graph.embed_names) + layer * (graph.n_heads + 1)
    if reader.startswith("a") or graph.parallel_mlp:
        return before_heads
    return before_heads + graph.n_heads


@given(graphs())
def test_edge_count_formula_equals_the_enumeration(graph):
    """`count_edges` equals the number of enumerated edges, and every edge is listed once."""
    g = graph
    n = count_edges(g.n_layers, g.n_heads, g.n_kv_heads, len(g.embed_names), g.parallel_mlp)
    assert n == graph.num_edges == len(graph.edges) == len(set(graph.edges))
    assert all(graph.edge_index[e] == i for i, e in enumerate(graph.edges))


@given(graphs())
def test_no_edge_points_upstream(graph):
    """Every edge's writer comes before its reader's place in the network."""
    for writer, reader in graph.edges:
        assert graph.writer_index[writer] < reader_position(graph, reader), (writer, reader)


@given(graphs())
def test_every_reader_reads_exactly_the_writers_upstream_of_it(graph):
    """A reader's writers are exactly the writers upstream of it, in writer order, in one block of edges."""
    by_reader: dict[str, list[int]] = {}
    for i, (_, reader) in enumerate(graph.edges):
        by_reader.setdefault(reader, []).append(i)
    assert set(by_reader) == set(graph.readers)
    for reader, indices in by_reader.items():
        writers = [graph.edges[i][0] for i in indices]
        assert writers == list(graph.writers[: reader_position(graph, reader)]), reader
        assert indices == list(range(indices[0], indices[0] + len(indices))), reader
