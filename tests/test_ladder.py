"""The size ladder's small rungs: compiled on demand, verified, recovered exactly under zero and interchange
ablation; and the balanced dataset that makes a rare branch common enough to find (bench/ladder.py runs them all)."""

import pytest

pytest.importorskip("tracr")

from epverify.tracr.build import compile_entry  # noqa: E402
from epverify.tracr.data import clean_inputs, dataset, last_outputs  # noqa: E402
from epverify.tracr.ground_truth import (  # noqa: E402
    BREAKS,
    CATEGORICAL_TOLERANCE,
    TOLERANCE,
    Verifier,
    ground_truth,
)
from epverify.tracr.ladder import BY_NAME, SMALL  # noqa: E402
from epverify.tracr.recover import recover  # noqa: E402


def compiled(name: str):
    return compile_entry(BY_NAME[name])


def test_a_balanced_sample_makes_the_rare_branch_common():
    model = compiled("all_equal_v6_l6")
    uniform = dict(model.dataset)
    uniform.pop("balance")
    rare = sum(last_outputs(model, clean_inputs(uniform)))
    balanced = clean_inputs(model.dataset, model)
    common = sum(last_outputs(model, balanced))
    assert len(balanced) == model.dataset["sample_size"]
    assert rare < 0.05 * len(balanced)  # uniform inputs: "all equal" is rare (mostly the length-1 inputs)
    assert common == len(balanced) // 2  # balanced: one of each output in turn (the rare one's inputs repeated)
    assert clean_inputs(model.dataset, model) == balanced  # seeded: the same sample every time
    with pytest.raises(ValueError, match="needs the compiled model"):
        clean_inputs(model.dataset)


def test_the_ground_truth_is_checked_on_the_balanced_data():
    model = compiled("all_equal_v6_l6")
    clean, _ = dataset(model.dataset, model)
    verifier = Verifier(model, "zero")
    assert verifier.ids.shape[0] == len(clean)
    assert model.encode(clean)[0].equal(verifier.ids)


@pytest.mark.parametrize("name", SMALL)
def test_a_small_rung_is_recovered_exactly_under_both_ablations(name):
    model = compiled(name)
    for ablation in ("interchange", "zero"):
        model.ground_truth[ablation] = truth = ground_truth(model, ablation)
        assert truth["edges"]
        report = recover(model, ablation, seed=0)
        assert report.exact, (ablation, report.found_edges, report.truth_edges)


def test_a_categorical_output_is_compared_as_the_program_output():
    """reverse_v10_l8's output head has a BOS default its queries never need: without its two edges the one-hot
    outputs move by about 0.01 (Tracr's attention leak to BOS is gone) and decode the same on every input, so the
    circuit agrees and the zero-ablation truth leaves them out; the truth's own edges are each needed (their
    removals change a decoded output, `BREAKS`, or a value by more than the tolerance)."""
    model = compile_entry(BY_NAME["reverse_v10_l8"])
    verifier = Verifier(model, "zero")
    truth = [tuple(e) for e in ground_truth(model, "zero")["edges"]]
    bos = [("tok_embeds", "a3.h0.q"), ("tok_embeds", "a3.h0.k")]
    assert not set(bos) & set(truth)
    with_bos = truth + bos
    assert verifier.agrees(with_bos)
    moved = verifier.deviation(truth)
    assert TOLERANCE < moved <= CATEGORICAL_TOLERANCE  # the old 1e-3 criterion would have kept the two edges
    assert verifier.deviation(with_bos) == 0.0
    without = [verifier.deviation([e for e in truth if e != edge]) for edge in truth]
    assert all(d > CATEGORICAL_TOLERANCE for d in without)
    assert BREAKS in without and not verifier.agrees([])
