"""Regression properties, one per known bug of the reference Edge Pruning implementation: none comes back.

1. Masks initialised before `from_pretrained` were overwritten by the model's weight init (masks near 1/2).
2. Edge and node thresholds swapped in circuit extraction.
3. Dangling nodes left in extracted circuits.
4. NaN evaluation metrics (empty circuits, degenerate batches).
5. A target sparsity so high that the circuit came out empty, returned without a word.

Circuits are checked against an independent path computation (networkx) rather than `circuit.prune_dangling`:
under interchange and resample ablation a kept edge must lie on a path from an embedding to the output through
kept edges; under zero and mean ablation on a path from any writer to the output (module docstring of
epverify/circuit.py explains why).
"""

from __future__ import annotations

import logging
import math
import tempfile

import networkx as nx
import torch
from hypothesis import given
from hypothesis import strategies as st

import epverify
from epverify import PruneConfig, PruneData, prune
from epverify.adapters import wrap_pretrained
from epverify.core import engine, hard_concrete
from epverify.core.graph import OUTPUT, ComponentGraph
from epverify.eval import checks
from epverify.io.circuit import Circuit
from epverify.testing import strategies as eps

from .cases import assert_close_at_real_positions, cases

EXTRACTION_ABLATIONS = st.sampled_from(["interchange", "zero", "mean", "resample"])


# ----- 1. masks initialised after loading -------------------------------------------------------------------
@given(eps.model_configs(eps.HF_FAMILIES), st.integers(0, 1000), st.data())
def test_masks_start_at_one_after_loading_a_pretrained_model(config, seed, data):
    """A model loaded with from_pretrained starts pruning at log-alpha ~ N(10, 0.01): every deterministic mask
    is 1 and the first masked forward equals the model."""
    model = eps.build_model(config, seed)
    with tempfile.TemporaryDirectory() as path:
        model.save_pretrained(path)
        masked = wrap_pretrained(path)
    ids, corrupted, mask = data.draw(eps.token_batches(config.vocab_size, 8))
    prune_data = PruneData(ids, mask, mask.bool(), corrupted)
    frozen = PruneConfig(target_sparsity=0.5, steps=1, warmup_steps=1, lr=0.0, lambda_lr=0.0,
                         batch_size=len(ids))
    log_alpha = prune(masked.adapter, prune_data, frozen).edge_log_alpha  # lr 0: the initial log-alphas

    n = log_alpha.numel()
    assert abs(float(log_alpha.mean()) - hard_concrete.INIT_MEAN) <= 6 * hard_concrete.INIT_STD / math.sqrt(n)
    if n >= 20:
        assert abs(float(log_alpha.std()) / hard_concrete.INIT_STD - 1) <= 6 / math.sqrt(2 * (n - 1))
    initial = hard_concrete.deterministic(log_alpha)
    assert torch.equal(initial, torch.ones_like(initial))
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    first = masked.run(ids, mask, corrupted_ids=corrupted, edge_mask=initial)
    assert_close_at_real_positions(first, expected, mask.bool(), atol=1e-4)


# ----- 2 and 3. extraction: thresholds and dangling edges ---------------------------------------------------
@st.composite
def graphs(draw) -> ComponentGraph:
    n_heads = draw(st.integers(1, 4))
    n_kv = draw(st.sampled_from([k for k in range(1, n_heads + 1) if n_heads % k == 0]))
    embeds = ("tok_embeds", "pos_embeds")[: draw(st.integers(1, 2))]
    return ComponentGraph(draw(st.integers(1, 4)), n_heads, n_kv, embeds, draw(st.booleans()))


def log_alphas(n: int) -> st.SearchStrategy:
    """n log-alphas around the threshold: a seed, a shift and a spread (shrinks to small, simple vectors)."""
    def make(seed: int, shift: float, spread: float) -> torch.Tensor:
        return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * spread + shift

    return st.builds(make, st.integers(0, 2**31 - 1), st.floats(-3, 3), st.sampled_from([0.5, 2.0, 5.0]))


def on_input_output_paths(graph: ComponentGraph, kept: set, ablation: str) -> set:
    """The edges of `kept` on a source-to-output path through kept edges, by networkx reachability."""
    g = nx.DiGraph()
    g.add_nodes_from([*graph.writers, OUTPUT])
    for w, r in kept:
        for node in graph.reader_nodes(r) or (OUTPUT,):
            g.add_edge(w, node)
    sources = set(graph.embed_names) if ablation in ("interchange", "resample") else set(graph.writers)
    reached = set(sources).union(*(nx.descendants(g, s) for s in sources))
    useful = nx.ancestors(g, OUTPUT) | {OUTPUT}
    return {(w, r) for w, r in kept
            if w in reached and w in useful and set(graph.reader_nodes(r) or (OUTPUT,)) & useful}


@given(graphs(), EXTRACTION_ABLATIONS, st.data())
def test_edge_and_node_thresholds_are_never_swapped(graph, ablation, data):
    """An edge is extracted only when both its edge mask and its writer's node mask pass (log-alpha > 0): an
    edge that passes under a failing node is dropped, and so is a failing edge under a passing node."""
    edge_la = data.draw(log_alphas(graph.num_edges), label="edge log-alphas")
    node_la = data.draw(log_alphas(len(graph.writers)), label="node log-alphas")
    circuit = Circuit.from_masks(graph, edge_la, node_la, ablation=ablation)
    writer = torch.tensor(graph.edge_writer)
    both = (edge_la > 0) & (node_la[writer] > 0)
    passing = {graph.edges[i] for i in torch.nonzero(both).flatten().tolist()}
    assert set(circuit.edges) == on_input_output_paths(graph, passing, ablation)
    # the two mixed cases, each on its own
    passes, fails = edge_la.abs() + 1, -(edge_la.abs() + 1)
    node_passes, node_fails = node_la.abs() + 1, -(node_la.abs() + 1)
    assert Circuit.from_masks(graph, passes, node_fails, ablation=ablation).edges == []
    assert Circuit.from_masks(graph, fails, node_passes, ablation=ablation).edges == []
    all_pass = Circuit.from_masks(graph, passes, node_passes, ablation=ablation)
    assert set(all_pass.edges) == set(graph.edges)


@given(graphs(), EXTRACTION_ABLATIONS, st.data())
def test_extracted_circuits_have_no_dangling_edges(graph, ablation, data):
    """Every extracted edge lies on an input-to-output path through extracted edges, and every passing edge on
    such a path is extracted (dangling-edge removal drops nothing else)."""
    edge_la = data.draw(log_alphas(graph.num_edges), label="edge log-alphas")
    circuit = Circuit.from_masks(graph, edge_la, ablation=ablation)
    kept = set(circuit.edges)
    assert on_input_output_paths(graph, kept, ablation) == kept
    passing = {graph.edges[i] for i in torch.nonzero(edge_la > 0).flatten().tolist()}
    assert kept == on_input_output_paths(graph, passing, ablation)
    assert circuit.dropped_dangling == len(passing) - len(kept)


@given(cases(), st.sampled_from(["interchange", "zero", "mean"]), st.data())
def test_dropping_dangling_edges_never_changes_an_output(case, ablation, data):
    """The edges extraction drops as dangling change no output: the circuit runs as its passing edges do."""
    edge_la = data.draw(log_alphas(case.graph.num_edges), label="edge log-alphas")
    circuit = Circuit.from_masks(case.graph, edge_la, ablation=ablation)
    ablated = case.ablated(ablation)
    passing = hard_concrete.keep(edge_la).to(case.adapter.dtype)
    extracted = eps.edge_set_mask(case.graph, circuit.edges, case.adapter.dtype)
    run = engine.masked_run
    assert_close_at_real_positions(run(case.adapter, case.ids, ablated, extracted, attention_mask=case.mask),
                                   run(case.adapter, case.ids, ablated, passing, attention_mask=case.mask),
                                   case.real(), case.atol)


# ----- 4. evaluation never returns NaN ----------------------------------------------------------------------
@given(cases(), st.sampled_from(["interchange", "zero", "mean", "resample"]), st.data())
def test_evaluation_never_returns_nan(case, ablation, data):
    """`epverify.evaluate` gives finite metrics for any circuit, the empty one too, under every ablation."""
    kept = data.draw(st.just(set()) | eps.binary_edge_sets(case.graph), label="circuit")
    if ablation == "resample" and case.ids.shape[0] < 2:
        ablation = "zero"  # resample needs two rows
    prune_data = PruneData(case.ids, case.mask, case.mask.bool(), case.corrupted)
    mask = eps.edge_set_mask(case.graph, kept, case.adapter.dtype)
    metrics = epverify.evaluate(case.adapter, prune_data, mask, ablation, batch_size=4)
    assert all(math.isfinite(float(v)) for v in metrics.values()), metrics


# ----- 5. an empty circuit is reported ----------------------------------------------------------------------
@given(graphs(), EXTRACTION_ABLATIONS, st.data())
def test_an_empty_circuit_is_reported_never_returned_silently(graph, ablation, data):
    """Whenever extraction leaves no edge (every log-alpha <= 0, or only dangling edges pass), the circuit is
    flagged empty and a warning naming the cause is logged; a non-empty circuit is never flagged."""
    edge_la = data.draw(log_alphas(graph.num_edges), label="edge log-alphas")
    if data.draw(st.booleans(), label="push every log-alpha below 0"):
        edge_la = -edge_la.abs()
    circuit = Circuit.from_masks(graph, edge_la, ablation=ablation)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    checks.logger.addHandler(handler)
    try:
        empty = checks.flag_empty(circuit, target_sparsity=1.5)
    finally:
        checks.logger.removeHandler(handler)
    assert empty == (not circuit.edges) == circuit.metrics["empty"]
    assert len(records) == int(empty)
    if empty:
        message = records[0].getMessage()
        assert "empty" in message and "target sparsity 1.5" in message
        assert ("dangle" in message) == (circuit.dropped_dangling > 0)
