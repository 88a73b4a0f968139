"""The shipped ground truths are structural, sufficient, necessary and free of dangling edges, per ablation."""

import pytest

from epverify.circuit import prune_dangling
from epverify.tracr import load
from epverify.tracr.ground_truth import GT_ABLATIONS, Verifier, structural_edges
from epverify.tracr.zoo import names

CASES = [(name, ablation) for name in names() for ablation in GT_ABLATIONS]


@pytest.mark.parametrize("name,ablation", CASES)
def test_ground_truth_is_sufficient_and_every_edge_necessary(name, ablation):
    """Keeping only the truth reproduces the full model on every input; removing any one truth edge changes some
    output."""
    model = load(name)
    truth = [tuple(e) for e in model.ground_truth[ablation]["edges"]]
    verifier = Verifier(model, ablation)
    assert verifier.agrees(truth)
    for edge in truth:
        assert not verifier.agrees([e for e in truth if e != edge]), f"{edge} is not necessary"


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
