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


def test_trained_models_go_through_the_protocol_against_their_cards(assert_recovers):
    """A trained model's directory (or "trained") is a program like any other: the method gets the masked Hugging
    Face model and the card's dataset, and its edges are compared with the card's circuit. Here the method is
    leave-one-out (keep each edge whose removal alone raises the loss by more than 1e-3 nats), which finds
    first_token_gpt2's two-edge circuit; a method that keeps nothing fails with the card's edges named."""
    from epverify.eval.evaluator import Evaluator
    from epverify.trained.card import ROOT

    def leave_one_out(masked, data, ablation):
        evaluator = Evaluator(masked, data, ablation)
        full = torch.ones(masked.graph.num_edges)
        scores = torch.empty(masked.graph.num_edges)
        for i in range(masked.graph.num_edges):
            mask = full.clone()
            mask[i] = 0.0
            scores[i] = evaluator.mean_loss(mask) - 1e-3
        return scores

    results = assert_recovers(leave_one_out, programs=[ROOT / "first_token_gpt2"], ablation="interchange")
    assert [r.program for r in results] == ["first_token_gpt2"] and len(results[0].truth) == 2

    def no_edges(masked, data, ablation):
        return set()

    with pytest.raises(AssertionError, match=r"(?s)recovered 0/1.*first_token_gpt2.*missing"):
        assert_recovers(no_edges, programs=[ROOT / "first_token_gpt2"])
