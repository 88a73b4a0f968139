"""The bound on the log-alphas (`PruneConfig.log_alpha_bound`).

After every optimizer step the trainer clamps each log-alpha into [-bound, bound]: a gate past about 10 is open (or
shut) on every sample and its sparsity gradient is below Adam's epsilon, so without the bound an edge that drifted
there stays, whatever the objective says later (docs/recovery.md, "Trained models").
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
    model = load("shift_by")
    return TracrAdapter(model), tracr_data(model)


configs = st.builds(
    PruneConfig,
    target_sparsity=st.floats(0.0, 1.5),
    steps=st.just(10),
    warmup_steps=st.integers(0, 10),
    lr=st.floats(0.05, 3.0),
    lambda_lr=st.floats(0.01, 3.0),
    batch_size=st.just(16),
    ablation=st.sampled_from(["zero", "interchange"]),
    seed=st.integers(0, 2**16),
    estimator=st.sampled_from(["score", "pathwise"]),
    node_masks=st.booleans(),
    log_alpha_bound=st.just(0.0),  # unbounded: each test sets its own bound
)


@given(configs, st.floats(0.5, 12.0))
def test_no_log_alpha_ends_outside_the_bound(config, bound):
    """Edge and node log-alphas both lie in [-bound, bound] at the end of any run."""
    adapter, data = _model()
    result = prune(adapter, data, replace(config, log_alpha_bound=bound))
    for log_alpha in (result.edge_log_alpha, result.node_log_alpha):
        if log_alpha is not None:
            assert log_alpha.abs().max() <= bound


@given(configs)
def test_a_bound_the_run_never_reaches_changes_nothing(config):
    """A bound above every log-alpha the unbounded run ends with, and above its start (about 10) plus the steps it
    could take, gives that run's masks and lambdas bit for bit."""
    adapter, data = _model()
    free = prune(adapter, data, config)
    bound = 10.1 + 4 * config.lr * config.steps  # one Adam step moves a parameter by at most (1 - b1) / sqrt(1 - b2) lr
    bounded = prune(adapter, data, replace(config, log_alpha_bound=bound))
    assert torch.equal(free.edge_log_alpha, bounded.edge_log_alpha)
    assert torch.equal(free.lambdas, bounded.lambdas)
