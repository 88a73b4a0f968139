"""The ceiling on an edge's price (`PruneConfig.max_edge_price`).

The sparsity term lambda1 (s - t) + lambda2 (s - t)^2 pulls every edge's keep probability with slope
lambda1 + 2 lambda2 (s - t), divided by the number of edges E (s is a mean over edges). With a ceiling c the
trainer scales the lambdas down after each ascent step so that this slope is at most c E in magnitude.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import torch
from hypothesis import given
from hypothesis import strategies as st

from epverify import PruneConfig, prune
from epverify.adapters.tracr import TracrAdapter
from epverify.tracr import load
from epverify.tracr.policy import tracr_data


@functools.cache
def _model():
    model = load("shift_by")  # 13 edges: the graph on which an uncapped price outgrows its circuit
    return TracrAdapter(model), tracr_data(model)


def _slopes(result) -> list[float]:
    return [abs(h["lambda1"] + 2 * h["lambda2"] * (h["sparsity"] - h["target"])) for h in result.history]


configs = st.builds(
    PruneConfig,
    target_sparsity=st.floats(0.0, 1.5),
    steps=st.just(12),
    warmup_steps=st.integers(0, 12),
    lr=st.just(0.1),
    lambda_lr=st.floats(0.01, 3.0),
    batch_size=st.just(16),
    ablation=st.sampled_from(["zero", "interchange"]),
    seed=st.integers(0, 2**16),
    estimator=st.sampled_from(["score", "pathwise"]),
    max_edge_price=st.just(0.0),  # uncapped: each test sets its own ceiling
)


@given(configs, st.floats(1e-4, 0.5))
def test_no_step_prices_an_edge_above_the_ceiling(config, ceiling):
    """After every step, |lambda1 + 2 lambda2 (s - t)| / E <= the ceiling."""
    adapter, data = _model()
    result = prune(adapter, data, replace(config, max_edge_price=ceiling))
    bound = ceiling * adapter.graph.num_edges
    assert max(_slopes(result)) <= bound * (1 + 1e-5)


@given(configs)
def test_a_ceiling_the_run_never_reaches_changes_nothing(config):
    """A ceiling above every slope of the uncapped run gives that run's masks and lambdas bit for bit."""
    adapter, data = _model()
    free = prune(adapter, data, config)
    ceiling = (max(_slopes(free)) + 1.0) / adapter.graph.num_edges
    capped = prune(adapter, data, replace(config, max_edge_price=ceiling))
    assert torch.equal(free.edge_log_alpha, capped.edge_log_alpha)
    assert torch.equal(free.lambdas, capped.lambdas)


def test_without_a_ceiling_the_price_of_an_edge_keeps_rising():
    """The counterpart that makes the first property mean something: uncapped, the slope passes 0.01 nats per edge
    within a few steps at a target above 1."""
    adapter, data = _model()
    config = PruneConfig(target_sparsity=1.02, steps=12, warmup_steps=4, lambda_lr=0.5, batch_size=16,
                         ablation="zero", max_edge_price=0.0)
    slopes = _slopes(prune(adapter, data, config))
    assert slopes[-1] > slopes[0] and slopes[-1] > 0.01 * adapter.graph.num_edges
    capped = _slopes(prune(adapter, data, replace(config, max_edge_price=0.01)))
    assert max(capped) <= 0.01 * adapter.graph.num_edges * (1 + 1e-5)
