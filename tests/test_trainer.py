"""The trainer: seeded, Lagrangian by ascent, and bad input / divergence reported clearly with work kept."""

import math
from dataclasses import replace

import pytest
import torch

from epverify import PruneConfig, PruneData, prune
from epverify.adapters import wrap
from epverify.adapters.tracr import TracrAdapter
from epverify.core import hard_concrete
from epverify.errors import EpverifyError
from epverify.tracr import load
from epverify.tracr.policy import tracr_data


def _small():
    model = load("xproportion")
    return TracrAdapter(model), tracr_data(model)


def _config(**kw):
    base = dict(target_sparsity=0.5, steps=6, warmup_steps=3, lr=0.1, lambda_lr=0.1, batch_size=16)
    base.update(kw)
    return PruneConfig(**base)


@pytest.mark.parametrize("target", [-0.1, 1.6, math.nan])
def test_target_sparsity_out_of_range_is_rejected(target):
    with pytest.raises(EpverifyError, match=r"\[0, 1.5\]"):
        _config(target_sparsity=target).validate()


@pytest.mark.parametrize("beta", [0.0, -1.0, 11.0])
def test_gate_temperature_out_of_range_is_rejected(beta):
    with pytest.raises(EpverifyError, match=r"gate_temperature .* \(0, 10\]"):
        _config(gate_temperature=beta).validate()


@pytest.mark.parametrize("price", [-0.01, math.nan])
def test_negative_edge_price_ceiling_is_rejected(price):
    with pytest.raises(EpverifyError, match=r"max_edge_price .* 0 \(no ceiling\) or positive"):
        _config(max_edge_price=price).validate()


def test_clean_and_corrupted_of_different_shapes_are_rejected():
    ids = torch.zeros(4, 5, dtype=torch.long)
    with pytest.raises(EpverifyError, match="same shape"):
        PruneData(ids, torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool),
                  torch.zeros(4, 6, dtype=torch.long))


def test_empty_dataset_is_rejected():
    ids = torch.zeros(0, 5, dtype=torch.long)
    with pytest.raises(EpverifyError, match="empty"):
        PruneData(ids, ids, ids.bool(), ids)


def test_same_seed_same_masks_and_lambdas_ascend():
    adapter, data = _small()
    a = prune(adapter, data, _config(seed=3))
    b = prune(adapter, data, _config(seed=3))
    c = prune(adapter, data, _config(seed=4))
    assert torch.equal(a.edge_log_alpha, b.edge_log_alpha)
    assert not torch.equal(a.edge_log_alpha, c.edge_log_alpha)
    # sparsity stays below the target early on, so gradient ascent drives lambda1 negative
    assert all(h["sparsity"] < h["target"] for h in a.history[1:])
    assert a.lambdas[0] < 0


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_masks():
    adapter, data = _small()
    original = adapter.unembed
    seen = []

    def progress(record):
        seen.append(record["step"])
        if record["step"] == 3:  # from the 4th step on the model produces NaN
            adapter.unembed = lambda x: original(x) * float("nan")

    with pytest.raises(EpverifyError, match="loss became nan at step 3") as info:
        prune(adapter, data, _config(), progress=progress)
    result = info.value.result
    assert len(result.history) == 3 and torch.isfinite(result.edge_log_alpha).all()
    assert not torch.equal(result.edge_log_alpha, hard_concrete.init_log_alpha(adapter.graph.num_edges,
                                                                       torch.Generator().manual_seed(0)))


def test_micro_batches_need_the_pathwise_estimator():
    with pytest.raises(EpverifyError, match="only the pathwise estimator"):
        _config(micro_batch_size=4, estimator="score").validate()
    with pytest.raises(EpverifyError, match="micro_batch_size"):
        _config(micro_batch_size=-1).validate()


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_a_warm_start_begins_at_the_attribution_scores_mapped_to_log_alphas(method):
    """init_from: the log-alphas start at warm_log_alpha(the method's scores), plus the cold start's noise; with
    the learning rates at 0 they stay there."""
    from epverify.eval.evaluator import Evaluator
    from epverify.methods import eap, eap_ig

    model = load("hist")
    data = tracr_data(model)
    config = PruneConfig(target_sparsity=0.7, steps=1, warmup_steps=0, lr=0.0, lambda_lr=0.0, batch_size=8,
                         init_from=method)
    adapter = wrap(model).adapter
    started = prune(adapter, data, config).edge_log_alpha
    attribution = (eap if method == "eap" else eap_ig)(adapter, data, "interchange",
                                                       evaluator=Evaluator(adapter, data, "interchange", 8))
    expected = hard_concrete.warm_log_alpha(attribution.scores, 0.7)
    noise = hard_concrete.init_log_alpha(len(expected), torch.Generator().manual_seed(0)) - hard_concrete.INIT_MEAN
    torch.testing.assert_close(started, expected + noise)
    cold = prune(adapter, data, replace(config, init_from="")).edge_log_alpha
    assert (cold > 9).all() and (started < 0).float().mean() > 0.5  # cold: all open; warm: the target's share shut


def test_an_unknown_warm_start_is_refused():
    with pytest.raises(EpverifyError, match="unknown init_from 'magic'"):
        PruneConfig(init_from="magic").validate()


def _sparsity_term(constraint: str):
    from epverify.core.graph import ComponentGraph
    from epverify.train.objective import SparsityTerm

    graph = ComponentGraph(1, 2, 1, ("tok_embeds",))
    term = SparsityTerm(PruneConfig(target_sparsity=0.9, warmup_steps=10, sparsity_constraint=constraint), graph,
                        torch.device("cpu"))
    with torch.no_grad():
        term.lambdas.copy_(torch.tensor([-2.0, 3.0]))  # as after a stretch of the run spent below the target
    return term, graph


@pytest.mark.parametrize("constraint", ["at_least", "exact"])
def test_past_the_target_only_the_exact_constraint_pushes_edges_back_up(constraint):
    """Early in the ramp every edge shut means a sparsity far past the target: "exact" pulls every log-alpha up
    (and the lambdas keep learning), "at_least" leaves the masks to the faithfulness loss alone."""
    term, graph = _sparsity_term(constraint)
    log_alpha = torch.full((graph.num_edges,), -5.0, requires_grad=True)
    value, sparsity, target, _ = term(log_alpha, None, step=0)
    assert sparsity.item() > target
    value.backward()
    if constraint == "exact":
        assert (log_alpha.grad < 0).all() and term.lambdas.grad.abs().sum() > 0  # descent raises every log-alpha
    else:
        assert value.item() == 0 and (log_alpha.grad == 0).all() and (term.lambdas.grad == 0).all()


@pytest.mark.parametrize("constraint", ["at_least", "exact"])
def test_short_of_the_target_both_constraints_push_the_same(constraint):
    term, graph = _sparsity_term(constraint)
    log_alpha = torch.full((graph.num_edges,), 5.0, requires_grad=True)
    value, sparsity, target, gap = term(log_alpha, None, step=9)
    value.backward()
    assert sparsity.item() < target and (log_alpha.grad > 0).all()  # descent lowers every log-alpha
    assert torch.allclose(log_alpha.grad, _exact_grad(log_alpha.detach()))


def _exact_grad(log_alpha):
    term, _ = _sparsity_term("exact")
    log_alpha = log_alpha.clone().requires_grad_(True)
    term(log_alpha, None, step=9)[0].backward()
    return log_alpha.grad


def test_an_unknown_sparsity_constraint_is_refused_and_old_runs_keep_theirs():
    with pytest.raises(EpverifyError, match="unknown sparsity_constraint 'equal': choose at_least or exact"):
        PruneConfig(sparsity_constraint="equal").validate()
    saved = PruneConfig().to_dict()
    del saved["sparsity_constraint"]  # a checkpoint written before the setting existed
    assert PruneConfig.from_dict(saved).sparsity_constraint == "exact"
