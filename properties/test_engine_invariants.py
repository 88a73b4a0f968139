"""The masked engine (epverify/engine.py) on random Tracr-shaped models and shipped zoo programs.

Each property runs on both sources (see `properties/cases.py`): random sizes and weights with random
right-padded batches, and rows of the zoo programs' own datasets. Outputs are compared at real positions only.
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from epverify.core import engine, oracle
from epverify.testing import strategies as eps

from .cases import assert_close_at_real_positions, cases

ABLATIONS = st.sampled_from(["interchange", "zero", "mean"])


@given(cases(), ABLATIONS)
def test_all_ones_reproduces_the_full_model(case, ablation):
    """With every edge mask at 1 the masked run equals the full model, whatever the ablation."""
    ones = torch.ones(case.graph.num_edges, dtype=case.adapter.dtype)
    out = engine.masked_run(case.adapter, case.ids, case.ablated(ablation), ones, attention_mask=case.mask)
    full = engine.forward(case.adapter, case.ids, case.mask)
    assert_close_at_real_positions(out, full, case.real(), case.atol)


@given(cases())
def test_all_zeros_under_interchange_is_the_model_on_the_corrupted_input(case):
    """All edge masks at 0 under interchange ablation: the masked run is the model on the corrupted input."""
    zeros = torch.zeros(case.graph.num_edges, dtype=case.adapter.dtype)
    ablated = case.ablated("interchange")
    out = engine.masked_run(case.adapter, case.ids, ablated, zeros, attention_mask=case.mask)
    corrupted = engine.forward(case.adapter, case.corrupted, case.mask)
    assert_close_at_real_positions(out, corrupted, case.real(), case.atol)


@given(cases(), ABLATIONS, st.data())
def test_binary_edge_sets_equal_the_oracle(case, ablation, data):
    """A binary edge set through the delta-form engine equals the oracle (a plain sum of writer outputs)."""
    kept = data.draw(eps.binary_edge_sets(case.graph), label="kept")
    mask = eps.edge_set_mask(case.graph, kept, case.adapter.dtype)
    ours = engine.masked_run(case.adapter, case.ids, case.ablated(ablation), mask, attention_mask=case.mask)
    theirs = oracle.run_with_edges(case.adapter, case.ids, kept, ablation, case.mask, case.corrupted,
                                   reference=(case.ids, case.mask))
    assert_close_at_real_positions(ours, theirs, case.real(), case.atol)


@given(cases(ragged=True), ABLATIONS, st.data())
def test_a_row_does_not_depend_on_its_batch_or_padding(case, ablation, data):
    """A row's outputs are the same run alone (unpadded) as inside a padded batch of other rows."""
    z = data.draw(eps.edge_masks(case.graph, dtype=case.adapter.dtype), label="edge mask")
    mean = case.mean_reference() if ablation == "mean" else None
    ablated = case.ablated(ablation, mean=mean)
    batch = engine.masked_run(case.adapter, case.ids, ablated, z, attention_mask=case.mask)
    for row in range(case.ids.shape[0]):
        index = torch.tensor([row])
        ids, _, mask = case.rows(index)
        ablated = case.ablated(ablation, index, mean)
        alone = engine.masked_run(case.adapter, ids, ablated, z, attention_mask=mask)
        real = case.real(index)
        assert_close_at_real_positions(alone, batch[index, : ids.shape[1]], real, case.atol)


@given(cases(), ABLATIONS, st.data())
def test_a_node_mask_equals_masking_the_writers_outgoing_edges(case, ablation, data):
    """Node masks multiply into their writer's outgoing edges: a node mask z_w equals edge masks z_e * z_w on
    w's edges; in particular a node mask of 0 removes all of w's outgoing edges."""
    graph = case.graph
    z = data.draw(eps.edge_masks(graph, dtype=case.adapter.dtype), label="edge mask")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="node seed"))
    node = torch.rand(len(graph.writers), generator=gen, dtype=torch.float64)
    node = torch.where(node < 0.3, 0.0, torch.where(node > 0.7, 1.0, node)).to(case.adapter.dtype)
    ablated = case.ablated(ablation)
    with_nodes = engine.masked_run(case.adapter, case.ids, ablated, z, node, case.mask)
    folded = z * node[torch.tensor(graph.edge_writer)]
    with_edges = engine.masked_run(case.adapter, case.ids, ablated, folded, attention_mask=case.mask)
    assert_close_at_real_positions(with_nodes, with_edges, case.real(), case.atol)
