"""Faithfulness bounds (the Evaluator's loss, which Edge Pruning minimises), and supersets of ground truth.

What is true about adding edges, checked before asserting it:

- Exact, any ablation, any circuit: adding *inert* edges (the writer writes no residual direction the reader
  reads) never changes an output.
- False edge by edge: adding one ground-truth edge to a circuit can raise the loss. `hist`, interchange:
  C = {tok_embeds -> a0.h0.q, m0 -> resid_post} has KL 6.86 (accuracy 0.31); adding the ground-truth edge
  a0.h0 -> m0 gives KL 7.61 (accuracy 0.24): the head then counts with a clean query against corrupted keys.
- False under zero ablation even for whole supersets: `shuffle_dyck`, zero ablation: the ground truth plus
  {tok_embeds -> a4.h1.q, tok_embeds -> a4.h1.k} has KL 0.70 (accuracy 0.93). With both inputs zeroed the head
  attends uniformly, which the ground truth relies on; feeding it clean tokens on q and k alone changes that.
  (`test_the_zero_ablation_counterexample_still_holds` pins this example.)
- True on every shipped program under interchange and mean ablation (checked here on random supersets; an
  empirical property of the zoo's ground truths, not a theorem): every superset of the ground truth reproduces
  the full model, so adding the *whole* ground truth to any circuit never increases its loss (it makes it 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from hypothesis import given
from hypothesis import strategies as st

from epverify import PruneData
from epverify.adapters.tracr import TracrAdapter
from epverify.core import engine
from epverify.eval.evaluator import Evaluator, evaluate
from epverify.testing import strategies as eps
from epverify.tracr import load
from epverify.tracr.ground_truth import structural_edges
from epverify.tracr.policy import tracr_data

from .cases import ZOO, cases

TOL = 1e-6


def _data(case) -> PruneData:
    """The case's batch as training data, the loss taken at every real position."""
    return PruneData(case.ids, case.mask, case.mask.bool(), case.corrupted)


@given(cases(), st.sampled_from(["interchange", "zero", "mean"]), st.data())
def test_faithfulness_is_never_negative(case, ablation, data):
    """The faithfulness loss (KL; squared error for a numerical output) of any masks is >= 0 on every row."""
    z = data.draw(eps.edge_masks(case.graph, dtype=case.adapter.dtype), label="edge mask")
    prune_data = _data(case)
    ev = Evaluator(case.adapter, prune_data, ablation, batch_size=64)
    logits = engine.masked_run(case.adapter, case.ids, case.ablated(ablation), z, attention_mask=case.mask)
    per_position = ev.loss_per_position(logits[prune_data.loss_mask], torch.arange(len(prune_data)))
    assert (per_position >= -TOL).all()


@given(cases(), st.sampled_from(["interchange", "zero", "mean"]))
def test_the_full_circuit_has_zero_loss(case, ablation):
    """Keeping every edge (all masks 1) gives a faithfulness loss of 0."""
    ones = torch.ones(case.graph.num_edges, dtype=case.adapter.dtype)
    prune_data = _data(case)
    ev = Evaluator(case.adapter, prune_data, ablation, batch_size=64)
    logits = engine.masked_run(case.adapter, case.ids, case.ablated(ablation), ones, attention_mask=case.mask)
    assert abs(ev.loss(logits[prune_data.loss_mask], torch.arange(len(prune_data))).item()) <= TOL * ev.n_positions


@dataclass
class Program:
    """A zoo program on its whole dataset, with the full-model targets and the ablated run computed once."""

    adapter: TracrAdapter
    data: PruneData
    evaluator: Evaluator  # one batch: the whole dataset
    truth: set

    def loss(self, edges) -> float:
        """Faithfulness loss (mean per position) of the circuit keeping exactly `edges`."""
        return self.evaluator.mean_loss(eps.edge_set_mask(self.adapter.graph, edges))


@cache
def program(name: str, ablation: str) -> Program:
    model = load(name)
    adapter = TracrAdapter(model)
    data = tracr_data(model)
    truth = {tuple(e) for e in model.ground_truth[ablation]["edges"]}
    return Program(adapter, data, Evaluator(adapter, data, ablation, batch_size=len(data)), truth)


@given(st.sampled_from(ZOO), st.sampled_from(["interchange", "zero", "mean"]), st.data())
def test_adding_inert_edges_never_changes_the_loss(name, ablation, data):
    """For any circuit, adding edges whose writer writes nothing their reader reads leaves the loss alone."""
    p = program(name, ablation)
    circuit = data.draw(eps.binary_edge_sets(p.adapter.graph), label="circuit")
    structural = set(structural_edges(p.adapter.model))
    inert = {e for e in p.adapter.graph.edges if e not in structural}
    extra = data.draw(st.sets(st.sampled_from(sorted(inert))), label="inert edges") if inert else set()
    assert abs(p.loss(circuit | extra) - p.loss(circuit)) <= TOL


@given(st.sampled_from(ZOO), st.sampled_from(["interchange", "mean"]), st.data())
def test_every_superset_of_the_ground_truth_is_faithful_under_interchange_and_mean(name, ablation, data):
    """Under interchange and mean ablation, the ground truth plus any other edges has zero loss on the
    program's whole dataset; hence adding the whole ground truth to any circuit never increases its loss."""
    p = program(name, ablation)
    circuit = data.draw(eps.binary_edge_sets(p.adapter.graph), label="circuit")
    assert p.loss(circuit | p.truth) <= 1e-4
    assert p.loss(circuit | p.truth) <= p.loss(circuit) + TOL


def test_the_zero_ablation_counterexample_still_holds():
    """The documented counterexample: under zero ablation a superset of shuffle_dyck's truth is unfaithful."""
    p = program("shuffle_dyck", "zero")
    superset = p.truth | {("tok_embeds", "a4.h1.q"), ("tok_embeds", "a4.h1.k")}
    assert p.loss(p.truth) <= 1e-4
    assert p.loss(superset) > 0.1, "the counterexample in this module's docstring no longer holds: update it"
    mask = eps.edge_set_mask(p.adapter.graph, superset)
    assert evaluate(p.adapter, p.data, mask, "zero")["accuracy"] < 1.0


def test_adding_one_ground_truth_edge_can_raise_the_loss():
    """The documented edge-by-edge counterexample (hist, interchange)."""
    p = program("hist", "interchange")
    circuit = {("tok_embeds", "a0.h0.q"), ("m0", "resid_post")}
    assert ("a0.h0", "m0") in p.truth
    assert p.loss(circuit | {("a0.h0", "m0")}) > p.loss(circuit) + 0.1, \
        "the counterexample in this module's docstring no longer holds: update it"
