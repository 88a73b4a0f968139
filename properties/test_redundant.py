"""The redundancy pass of circuit extraction (`epverify.eval.redundancy.drop_redundant`).

Invariants: for any edge set of a zoo program, any scores and any ablation, the pass only removes edges, and the
circuit it returns is as faithful as the one it was given, within the tolerance; and every edge it keeps is
needed: without it alone, the returned circuit is more than the tolerance away from the one it was given.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

from epverify.adapters.tracr import TracrAdapter
from epverify.eval.evaluator import Evaluator, evaluate
from epverify.eval.redundancy import drop_redundant
from epverify.io.circuit import Circuit
from epverify.tracr import load
from epverify.tracr.policy import tracr_data

PROGRAMS = ("hist", "sort", "count", "shift_by", "sort_unique", "sum_neighbours")
LOSS_SLACK = 1e-9  # summation order: the pass and `evaluate` add the same numbers in different batches


@settings(max_examples=max(3, settings().max_examples // 2))
@given(st.sampled_from(PROGRAMS), st.sampled_from(["zero", "interchange", "mean"]), st.floats(0.2, 0.9),
       st.sampled_from([1e-6, 1e-3, 0.1]), st.integers(0, 2**31 - 1))
def test_the_pass_only_removes_edges_and_keeps_the_loss_within_tolerance(program, ablation, density, tolerance,
                                                                         seed):
    """Random edge sets and scores: what comes back is a subset whose loss is at most the given circuit's plus
    the tolerance, and every removed edge is counted as redundant or dangling."""
    adapter = TracrAdapter(load(program))
    graph, data = adapter.graph, tracr_data(adapter.model)
    gen = torch.Generator().manual_seed(seed)
    log_alpha = torch.where(torch.rand(graph.num_edges, generator=gen) < density, 1.0, -1.0)
    scores = torch.rand(graph.num_edges, generator=gen)
    circuit = Circuit.from_masks(graph, log_alpha, ablation=ablation)
    result = drop_redundant(Evaluator(adapter, data, ablation), circuit, scores, tolerance)
    note(f"{len(circuit.edges)} edges -> {len(result.edges)}")
    assert set(result.edges) <= set(circuit.edges)
    before = evaluate(adapter, data, circuit.mask(graph), ablation)["kl"]
    after = evaluate(adapter, data, result.mask(graph), ablation)["kl"]
    assert after <= before + tolerance + LOSS_SLACK
    removed = len(circuit.edges) - len(result.edges)
    assert removed == result.dropped_redundant + result.dropped_dangling - circuit.dropped_dangling


@settings(max_examples=max(3, settings().max_examples // 4))
@given(st.sampled_from(PROGRAMS), st.sampled_from(["zero", "interchange"]), st.floats(0.3, 1.0),
       st.integers(0, 2**31 - 1))
def test_every_edge_the_pass_keeps_is_needed(program, ablation, density, seed):
    """A faithful circuit (the ground truth and a random share of the other edges), random scores: the pass
    tries edges in runs that grow and shrink, and its last round tries every kept edge alone, so removing any one
    of them from its answer costs more than the tolerance."""
    model = load(program)
    adapter = TracrAdapter(model)
    graph, data = adapter.graph, tracr_data(model)
    gen = torch.Generator().manual_seed(seed)
    log_alpha = torch.where(torch.rand(graph.num_edges, generator=gen) < density, 1.0, -1.0)
    log_alpha[graph.index_of(sorted(tuple(e) for e in model.ground_truth[ablation]["edges"]))] = 1.0
    circuit = Circuit.from_masks(graph, log_alpha, ablation=ablation)
    evaluator = Evaluator(adapter, data, ablation)
    tolerance = 1e-6
    result = drop_redundant(evaluator, circuit, torch.rand(graph.num_edges, generator=gen), tolerance)
    limit = evaluator.mean_loss(circuit.mask(graph)) + tolerance
    mask = result.mask(graph)
    note(f"{len(circuit.edges)} edges -> {len(result.edges)}")
    for edge in result.edges:
        trial = mask.clone()
        trial[graph.edge_index[edge]] = 0.0
        assert evaluator.mean_loss(trial) > limit - LOSS_SLACK, edge


@pytest.mark.parametrize("program", ["sort", "shuffle_dyck", "detect_pattern"])
@pytest.mark.parametrize("ablation", ["zero", "interchange"])
def test_the_pass_finds_the_truth_inside_the_whole_structure(program, ablation):
    """Given every structural edge, with the ground truth scored above the rest, the pass returns the ground
    truth: each other structural edge is redundant once the truth is there."""
    from epverify.tracr.ground_truth import structural_edges

    model = load(program)
    adapter = TracrAdapter(model)
    graph = adapter.graph
    truth = {tuple(e) for e in model.ground_truth[ablation]["edges"]}
    structural = set(structural_edges(model))
    scores = torch.zeros(graph.num_edges)
    scores[graph.index_of(sorted(truth))] = 1.0
    log_alpha = torch.full((graph.num_edges,), -1.0)
    log_alpha[graph.index_of(sorted(structural))] = 1.0
    circuit = Circuit.from_masks(graph, log_alpha, ablation=ablation)
    assert len(circuit.edges) > len(truth)  # there is something to remove
    result = drop_redundant(Evaluator(adapter, tracr_data(model), ablation), circuit, scores, 1e-6)
    assert set(result.edges) == truth


@settings(max_examples=max(3, settings().max_examples // 4))
@given(st.sampled_from(PROGRAMS), st.sampled_from(["zero", "interchange", "mean"]), st.floats(0.0, 1.0),
       st.floats(0.0, 2.0), st.integers(0, 2**31 - 1))
def test_a_loss_with_a_limit_decides_as_the_whole_loss_does(program, ablation, density, fraction, seed):
    """`mean_loss(mask, limit)` may stop early, but it is over the limit exactly when the whole mean is, and where
    it is not over, it is the whole mean."""
    adapter = TracrAdapter(load(program))
    graph = adapter.graph
    evaluator = Evaluator(adapter, tracr_data(adapter.model), ablation)
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(graph.num_edges, generator=gen) < density).float()
    whole = evaluator.mean_loss(mask)
    limit = whole * fraction
    bounded = evaluator.mean_loss(mask, limit)
    note(f"whole {whole}, limit {limit}, bounded {bounded}")
    assert (bounded > limit) == (whole > limit)
    if whole <= limit:
        assert bounded == whole
