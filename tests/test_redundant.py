"""The redundancy pass never removes a ground-truth edge of the zoo at the recovery tolerance, and the score
estimator's hold stops the sparsity term only where the running estimate outweighs it."""

from __future__ import annotations

import pytest
import torch

from epverify.adapters.tracr import TracrAdapter
from epverify.errors import EpverifyError
from epverify.eval.evaluator import Evaluator
from epverify.eval.redundancy import drop_redundant
from epverify.io.circuit import Circuit
from epverify.tracr import load, names
from epverify.tracr.policy import REDUNDANT_TOLERANCE, tracr_data
from epverify.train import PruneConfig, ScoreSettings
from epverify.train.estimators import Score


@pytest.mark.parametrize("program", names())
def test_no_ground_truth_edge_is_redundant(program):
    """Every zoo truth (zero, interchange, mean and its equivalents) comes back whole from the pass, whatever the
    order: its least valuable edge (shuffle_dyck2 under zero ablation, 1.7e-4 nats per position) is worth far
    more than REDUNDANT_TOLERANCE."""
    model = load(program)
    adapter = TracrAdapter(model)
    graph, data = adapter.graph, tracr_data(model)
    for ablation, recorded in model.ground_truth.items():
        for edges in [recorded["edges"], *recorded.get("equivalent", [])]:
            truth = sorted(tuple(e) for e in edges)
            if not truth:
                continue
            circuit = Circuit(truth, graph.num_edges, ablation=ablation)
            scores = torch.rand(graph.num_edges, generator=torch.Generator().manual_seed(0))
            result = drop_redundant(Evaluator(adapter, data, ablation), circuit, scores, REDUNDANT_TOLERANCE)
            assert set(result.edges) == set(truth) and result.dropped_redundant == 0, (program, ablation)


def test_the_pass_is_recorded_in_the_circuit_file(tmp_path):
    model = load("count")
    adapter = TracrAdapter(model)
    graph = adapter.graph
    log_alpha = torch.ones(graph.num_edges)  # every edge: most of them are not needed
    circuit = Circuit.from_masks(graph, log_alpha, ablation="zero")
    result = drop_redundant(Evaluator(adapter, tracr_data(model), "zero"), circuit, log_alpha, REDUNDANT_TOLERANCE)
    assert result.dropped_redundant > 0
    again = Circuit.from_json(result.to_json(tmp_path / "c.json"))
    assert again.dropped_redundant == result.dropped_redundant and again.edges == result.edges


def _hold_case(mean, grad_estimate, push, closed):
    config = PruneConfig(estimator="score", score=ScoreSettings(gate=2.0, decay=0.5, hold=True))
    model = load("count")
    score = Score(Evaluator(TracrAdapter(model), tracr_data(model), "zero"), config, [len(mean)])
    score.steps = 1  # bias correction 1 - 0.5 = 0.5: the running estimate is twice the stored mean
    score.mean = [torch.tensor(mean) / 2]
    score.closed = [torch.tensor(closed)]
    estimate = torch.tensor(grad_estimate)
    param = torch.zeros(len(mean), requires_grad=True)
    param.grad = estimate + torch.tensor(push)
    score.grads = [estimate]
    score.after_backward([param])
    return param.grad


def test_hold_zeroes_only_closed_edges_worth_more_than_their_push():
    # edges: worth more than the push, worth less, open gate, pushed up, worth exactly the push
    mean = [-0.3, -0.1, -0.3, 0.2, -0.2]
    push = [0.2, 0.2, 0.2, -0.2, 0.2]
    closed = [True, True, False, True, True]
    estimate = [0.0, 0.0, -0.5, 0.0, 0.0]
    grad = _hold_case(mean, estimate, push, closed)
    expected = torch.tensor([0.0, 0.2, -0.5 + 0.2, -0.2, 0.2])
    assert torch.allclose(grad, expected)


def test_hold_needs_the_gated_score_estimator():
    with pytest.raises(EpverifyError, match="score_hold"):
        PruneConfig(score=ScoreSettings(hold=True)).validate()
    with pytest.raises(EpverifyError, match="score_hold"):
        PruneConfig(estimator="score", score=ScoreSettings(gate=0.0, hold=True)).validate()
    PruneConfig(estimator="score", score=ScoreSettings(gate=2.0, hold=True)).validate()


def test_an_edge_kept_by_one_pass_goes_once_the_edge_it_stood_in_for_is_gone():
    """Routes that stand in for each other: A cannot go while B is there, B can go, and then A can. One pass in
    score order (A first) keeps A; the passes repeat until one removes nothing, so only C is left."""
    graph = TracrAdapter(load("count")).graph
    a, b, c = ("tok_embeds", "resid_post"), ("pos_embeds", "resid_post"), ("m0", "resid_post")

    class Stand:  # a stand-in evaluator whose loss is a function of which of A, B, C are kept
        ablation = "zero"

        def __init__(self):
            self.graph = graph

        def mean_loss(self, mask, limit=None):
            kept = {e for e in (a, b, c) if mask[graph.edge_index[e]] > 0}
            return 1.0 if c not in kept or kept == {b, c} else 0.0

    scores = torch.zeros(graph.num_edges)
    scores[graph.edge_index[a]], scores[graph.edge_index[b]], scores[graph.edge_index[c]] = 1.0, 2.0, 3.0
    circuit = Circuit([a, b, c, ("a0.h0", "m0"), ("tok_embeds", "a0.h0.v")], graph.num_edges, ablation="zero")
    result = drop_redundant(Stand(), circuit, scores, 1e-6)
    assert result.edges == [c] and result.dropped_redundant == 4
