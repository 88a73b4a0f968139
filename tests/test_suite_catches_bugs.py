"""The property suite catches real bugs: break one invariant, run the property that guards it: it must fail.

Each test monkeypatches a deliberate bug into epverify (the engine ignoring node masks, dropping the ablated
residual, leaking padding; extraction with a different node threshold or without dangling-edge removal; gates
sampled without the stretch; masks initialised like model weights; an empty circuit going unreported) and
calls the Hypothesis property directly. The property must raise; with the bug removed (no patch) the same
property passes in `properties/`.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import Phase, settings

from epverify.core import engine, hard_concrete
from epverify.eval import checks
from epverify.io import circuit
from properties import test_engine_invariants as engine_props
from properties import test_gates as gate_props
from properties import test_regressions as regressions


def assert_property_fails(prop) -> None:
    """Run a Hypothesis property; it must fail on an assertion. No shrinking (the first failure is enough)
    and no example database (a deliberate bug must not leave examples behind)."""
    quick = settings(phases=[Phase.explicit, Phase.generate], database=None, report_multiple_bugs=False)
    with pytest.raises(AssertionError):
        quick(prop)()


def _patch_masked_run(monkeypatch, change):
    """Replace engine.masked_run by a buggy one: `change(args)` edits its arguments before the real run."""
    real = engine.masked_run

    def buggy(adapter, input_ids, ablated, edge_mask, node_mask=None, attention_mask=None):
        args = dict(adapter=adapter, input_ids=input_ids, ablated=ablated, edge_mask=edge_mask,
                    node_mask=node_mask, attention_mask=attention_mask)
        change(args)
        return real(**args)

    monkeypatch.setattr(engine, "masked_run", buggy)


def test_an_engine_that_ignores_node_masks_is_caught(monkeypatch):
    _patch_masked_run(monkeypatch, lambda args: args.update(node_mask=None))
    assert_property_fails(engine_props.test_a_node_mask_equals_masking_the_writers_outgoing_edges)


def test_an_engine_that_drops_the_ablated_residual_is_caught(monkeypatch):
    def drop_residual(args):
        rec = args["ablated"]
        attn_in = [torch.zeros_like(t) for t in rec.attn_in]
        mlp_in = [torch.zeros_like(t) for t in rec.mlp_in]
        args["ablated"] = engine.Record(rec.embeds, attn_in, rec.heads, mlp_in, rec.mlp_out,
                                        torch.zeros_like(rec.final))

    _patch_masked_run(monkeypatch, drop_residual)
    assert_property_fails(engine_props.test_all_ones_reproduces_the_full_model)


def test_an_engine_that_lets_padding_leak_is_caught(monkeypatch):
    _patch_masked_run(monkeypatch, lambda args: args.update(attention_mask=None))
    assert_property_fails(engine_props.test_a_row_does_not_depend_on_its_batch_or_padding)


def test_extraction_with_a_different_node_threshold_is_caught(monkeypatch):
    real = circuit.Circuit.from_masks.__func__

    def from_masks(cls, graph, edge_log_alpha, node_log_alpha=None, **info):
        if node_log_alpha is not None:  # the bug: a node passes when its deterministic mask is non-zero
            node_log_alpha = torch.where(hard_concrete.deterministic(node_log_alpha) > 0, 1.0, -1.0)
        return real(cls, graph, edge_log_alpha, node_log_alpha, **info)

    monkeypatch.setattr(circuit.Circuit, "from_masks", classmethod(from_masks))
    assert_property_fails(regressions.test_edge_and_node_thresholds_are_never_swapped)


def test_extraction_that_keeps_dangling_edges_is_caught(monkeypatch):
    monkeypatch.setattr(circuit, "prune_dangling", lambda graph, kept, ablation="interchange": set(kept))
    assert_property_fails(regressions.test_extracted_circuits_have_no_dangling_edges)


def test_gates_sampled_without_the_stretch_are_caught(monkeypatch):
    def unstretched(log_alpha, generator=None, beta=hard_concrete.BETA):
        u = torch.rand(log_alpha.shape, generator=generator).clamp(hard_concrete.EPS, 1 - hard_concrete.EPS)
        return torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)

    monkeypatch.setattr(hard_concrete, "sample", unstretched)
    assert_property_fails(gate_props.test_sampled_masks_follow_the_closed_form)


def test_masks_initialised_like_model_weights_are_caught(monkeypatch):
    # the reference implementation's bug: from_pretrained's weight init overwrote the mask parameters
    def like_model_weights(n, generator=None):
        return torch.randn(n, generator=generator) * 0.02

    monkeypatch.setattr(hard_concrete, "init_log_alpha", like_model_weights)
    assert_property_fails(regressions.test_masks_start_at_one_after_loading_a_pretrained_model)


def test_an_empty_circuit_going_unreported_is_caught(monkeypatch):
    monkeypatch.setattr(checks, "empty_circuit_message", lambda circuit, target_sparsity=None: None)
    assert_property_fails(regressions.test_an_empty_circuit_is_reported_never_returned_silently)
