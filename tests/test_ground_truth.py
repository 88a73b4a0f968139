"""The shipped ground truths are structural, sufficient, necessary and free of dangling edges, per ablation."""

import json

import pytest

from epverify.io.circuit import prune_dangling
from epverify.tracr import load
from epverify.tracr.ground_truth import (
    GT_ABLATIONS,
    Verifier,
    eliminate,
    eliminate_in_list_order,
    ground_truth,
    matching_truth,
    structural_edges,
)
from epverify.tracr.zoo import names

CASES = [(name, ablation) for name in names() for ablation in GT_ABLATIONS]


@pytest.mark.parametrize("name,ablation", CASES)
def test_ground_truth_is_sufficient_and_every_edge_necessary(name, ablation):
    """Keeping only the truth reproduces the full model on every input; removing any one truth edge changes some
    output."""
    model = load(name)
    truth = [tuple(e) for e in model.ground_truth[ablation]["edges"]]
    verifier = Verifier(model, ablation)
    for circuit in [truth, *[[tuple(e) for e in c] for c in model.ground_truth[ablation].get("equivalent", [])]]:
        assert verifier.agrees(circuit)
        for edge in circuit:
            assert not verifier.agrees([e for e in circuit if e != edge]), f"{edge} is not necessary"


@pytest.mark.parametrize("name", names())
def test_zero_and_interchange_truths_do_not_depend_on_tie_order(name):
    """Under the ablations recovery is checked on, breaking equal deviations the other way during elimination ends
    in the same circuit, so the truth is one circuit (mean ablation has an exact symmetry in shuffle_dyck)."""
    model = load(name)
    for ablation in ("zero", "interchange"):
        assert model.ground_truth[ablation]["equivalent"] == []


def test_elimination_keeps_the_mechanism_the_full_model_uses():
    """shuffle_dyck, zero ablation: dropping edges in list order ends in a 19-edge circuit whose select_last head
    reads only the constant `one` and BOS directions (a shortcut that reproduces the outputs only once the real
    query and key inputs are gone); the reversed list order ends in 24 edges with the program's own length-1 query
    and index key. Least change first drops the shortcut edges (removing them from the full model changes nothing)
    and keeps the mechanism (removing it from the full model changes decisions)."""
    model = load("shuffle_dyck")
    verifier = Verifier(model, "zero")
    structural = list(structural_edges(model))
    forward = eliminate_in_list_order(verifier, structural)
    backward = eliminate_in_list_order(verifier, structural[::-1])
    assert forward != backward  # the old rule's answer depended on the order
    truth = {tuple(e) for e in model.ground_truth["zero"]["edges"]}
    assert truth == backward and len(truth) == 24
    assert {("m1", "a4.h0.q"), ("pos_embeds", "a4.h0.k")} <= truth
    assert not {("tok_embeds", "a4.h0.q"), ("tok_embeds", "a4.h0.k")} & truth
    kept, dropped = eliminate(verifier, structural)
    assert set(kept) == truth
    shortcut = {edge: deviation for edge, deviation in dropped if edge[1] in ("a4.h0.q", "a4.h0.k")}
    assert shortcut[("tok_embeds", "a4.h0.q")] == 0.0 and shortcut[("tok_embeds", "a4.h0.k")] == 0.0


@pytest.mark.parametrize("name", names())
def test_ground_truth_is_structural_and_has_no_dangling_edges(name):
    model = load(name)
    structural = structural_edges(model)
    graph = __import__("epverify").wrap(model).graph
    for ablation in GT_ABLATIONS:
        truth = {tuple(e) for e in model.ground_truth[ablation]["edges"]}
        assert truth <= set(structural)
        assert prune_dangling(graph, truth, ablation) == truth
        dropped = {tuple(d["edge"]) for d in model.ground_truth[ablation]["dropped"]}
        assert dropped | truth == set(structural) and not dropped & truth
        assert all(d["reason"] for d in model.ground_truth[ablation]["dropped"])


def test_the_zoo_has_at_least_14_programs_with_non_empty_truth():
    non_empty = [n for n in names() if any(load(n).ground_truth[a]["edges"] for a in GT_ABLATIONS)]
    assert len(non_empty) >= 14
    assert {"reverse", "xproportion"} <= set(non_empty)


def test_paper_settings_are_exact():
    reverse, xprop = load("reverse"), load("xproportion")
    assert reverse.vocab == [1, 2, 3] and reverse.max_seq_len == 5
    assert xprop.vocab == ["a", "b", "c", "x"] and xprop.max_seq_len == 5
    assert not xprop.categorical  # frac_prevs is numerical


def test_an_equivalent_circuit_is_the_truth_it_is_compared_with():
    """shuffle_dyck under mean ablation has two circuits that differ by which of two interchangeable balance heads
    is kept; a circuit equal to either is compared with that one, anything else with the recorded truth."""
    recorded = load("shuffle_dyck").ground_truth["mean"]
    truth = {tuple(e) for e in recorded["edges"]}
    (other,) = [{tuple(e) for e in c} for c in recorded["equivalent"]]
    assert other != truth and len(other) == len(truth)
    assert matching_truth(recorded, other) == other
    assert matching_truth(recorded, truth) == truth
    assert matching_truth(recorded, truth - {next(iter(truth))}) == truth


@pytest.mark.parametrize("name", ["shuffle_dyck", "sort_unique", "hist", "reverse", "xproportion"])
def test_the_rule_recomputes_the_shipped_truth(name):
    """Computing the truth again gives the shipped record: the same edges, the same drops in the same order with the
    same deviations, the same equivalent circuits (the elimination's early stops and its memory of edge sets change
    no choice; shuffle_dyck has a mean-ablation symmetry, xproportion a numerical output)."""
    model = load(name)
    for ablation in GT_ABLATIONS:
        again = json.loads(json.dumps(ground_truth(model, ablation)))
        assert again == model.ground_truth[ablation], ablation
