"""The pytest plugin: fixtures, the method protocol, and Edge Pruning itself run through `assert_recovers`."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import epverify
from epverify.testing.plugin import method_edges, recovery_results
from epverify.tracr.policy import tracr_config

SMALL = ["count", "hist", "shift_by"]


def edge_pruning(masked, data, ablation):
    """Edge Pruning through the protocol: train masks with the ablation's recovery defaults; the log-alphas are
    the scores (an edge is kept when its log-alpha is > 0), exactly what `epverify.tracr.recover` does."""
    torch.manual_seed(0)
    result = epverify.prune(masked.adapter, data, replace(tracr_config(ablation), seed=0))
    return result.edge_log_alpha


def test_edge_pruning_recovers_small_programs_through_the_protocol(assert_recovers):
    results = assert_recovers(edge_pruning, programs=SMALL, ablation="interchange")
    assert [r.program for r in results] == SMALL and all(r.exact for r in results)


def test_the_zoo_fixture_holds_every_shipped_program(tracr_zoo):
    assert set(tracr_zoo) == set(epverify.tracr.names())
    assert all(m.ground_truth for m in tracr_zoo.values())


def test_a_method_that_misses_edges_fails_with_a_table(assert_recovers, tracr_zoo):
    def no_edges(masked, data, ablation):
        return set()

    with pytest.raises(AssertionError) as info:
        assert_recovers(no_edges, programs=[tracr_zoo["count"], tracr_zoo["hist"]])
    message = str(info.value)
    assert "no_edges recovered 0/2 programs" in message and "missing" in message and "hist" in message
    # a low enough bar passes
    assert len(assert_recovers(no_edges, programs=["length"], min_exact=1.0)) == 1  # length's truth is empty


def test_outputs_are_read_as_edge_sets_scores_or_method_results(tracr_zoo):
    masked = epverify.wrap(tracr_zoo["count"])
    graph = masked.graph
    truth = {tuple(e) for e in tracr_zoo["count"].ground_truth["interchange"]["edges"]}
    scores = -torch.ones(graph.num_edges)
    scores[graph.index_of(sorted(truth))] = 1.0
    assert method_edges(scores, graph) == truth
    assert method_edges(sorted(truth), graph) == truth
    with pytest.raises(epverify.EpverifyError, match="one score per edge"):
        method_edges(torch.ones(3), graph)
    with pytest.raises(epverify.EpverifyError, match="not in this model's graph"):
        method_edges({("m9", "resid_post")}, graph)


def test_dangling_edges_are_dropped_before_comparing(tracr_zoo):
    """An extra edge that lies on no input-to-output path does not count against the method."""
    from epverify.io.circuit import prune_dangling

    model = tracr_zoo["reverse"]
    graph = epverify.wrap(model).graph
    truth = {tuple(e) for e in model.ground_truth["interchange"]["edges"]}
    dangling = next(e for e in graph.edges if e not in truth and prune_dangling(graph, truth | {e}) == truth)
    assert recovery_results(lambda masked, data, ablation: truth | {dangling}, programs=[model])[0].exact
