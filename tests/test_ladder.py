"""The size ladder's small rungs: compiled on demand, verified, recovered exactly under zero and interchange
ablation; and the balanced dataset that makes a rare branch common enough to find (bench/ladder.py runs them all)."""

import re

import pytest
import torch

pytest.importorskip("tracr")

from epverify.tracr.build import compile_entry  # noqa: E402
from epverify.tracr.data import clean_inputs, dataset, last_outputs  # noqa: E402
from epverify.tracr.ground_truth import (  # noqa: E402
    BREAKS,
    KL_TOLERANCE,
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


def test_a_categorical_output_is_compared_as_the_faithfulness_loss_reads_it():
    """reverse_v10_l8's output head has a BOS default its queries never need: without its two edges the one-hot
    outputs move by about 0.01 (Tracr's attention leak to BOS is gone), which the output distribution the loss reads
    barely notices, and decode the same on every input, so the circuit agrees and the zero-ablation truth leaves
    them out; the truth's own edges are each needed (their removals change a decoded output, `BREAKS`, or the
    distribution by more than `KL_TOLERANCE`)."""
    model = compile_entry(BY_NAME["reverse_v10_l8"])
    verifier = Verifier(model, "zero")
    truth = [tuple(e) for e in ground_truth(model, "zero")["edges"]]
    bos = [("tok_embeds", "a3.h0.q"), ("tok_embeds", "a3.h0.k")]
    assert not set(bos) & set(truth)
    with_bos = truth + bos
    assert verifier.agrees(with_bos)
    assert verifier.deviation(with_bos) == 0.0
    assert 0.0 < verifier.deviation(truth) <= KL_TOLERANCE
    values = torch.cat([verifier.outputs(truth, rows) for rows in verifier.chunks]) - torch.cat(verifier.full)
    assert values.abs().amax(-1)[verifier.positions].max() > TOLERANCE  # a value rule of 1e-3 would keep the pair
    without = [verifier.deviation([e for e in truth if e != edge]) for edge in truth]
    assert all(d > KL_TOLERANCE for d in without)
    assert BREAKS in without and not verifier.agrees([])


def test_a_bos_default_the_loss_values_stays_in_the_truth():
    """sort_unique_v26_l10's output head also has a BOS default (its query reads `one`, its key
    `tokens:compiler_bos`), but over 26 output values it matters more: without the pair no decoded output changes,
    yet values move by 0.26 and the output distribution by 0.025 nats, over `KL_TOLERANCE`, so the pair stays in
    the truth (and recovery keeps it)."""
    model = compile_entry(BY_NAME["sort_unique_v26_l10"])
    verifier = Verifier(model, "zero")
    truth = ground_truth(model, "zero")
    bos = [tuple(map(str.strip, e.split("->"))) for e, carried in truth["carries"].items()
           if carried in (["one"], ["tokens:compiler_bos"]) and e.endswith((".q", ".k"))]
    assert len(bos) == 2
    moved = verifier.deviation([tuple(e) for e in truth["edges"] if tuple(e) not in bos])
    assert KL_TOLERANCE < moved < BREAKS


def test_the_truth_probe_measures_both_sides_of_the_threshold(capsys):
    """bench/truth_probe.py (docs/benchmarks.md and docs/ground_truth.md quote it): `margins` on a zoo program and a
    rung whose truth keeps a BOS pair the loss values, `phases` on a small rung, `leak` on one whose truth leaves
    a BOS pair out."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import truth_probe

    assert truth_probe.main(["margins", "reverse,sort_unique_v26_l10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6  # two categorical programs, three ablations each
    zero = next(line for line in lines if line.startswith("sort_unique_v26_l10 zero"))
    smallest = float(zero.rsplit(" ", 1)[1])
    assert KL_TOLERANCE < smallest < BREAKS  # the BOS pair of test_a_bos_default_the_loss_values_stays_in_the_truth
    assert truth_probe.main(["phases", "reverse_v6_l6", "--ablation", "interchange"]) == 0
    out = capsys.readouterr().out
    assert "elimination (ties reversed)" in out and "2 edges kept" in out
    assert truth_probe.main(["leak", "reverse_v10_l8"]) == 0  # the leak its truth leaves out: values move, KL barely
    out = capsys.readouterr().out
    moved, kl = (float(x) for x in re.search(r"values by up to ([\d.e+-]+) .* by up to ([\d.e+-]+) nats", out).groups())
    assert moved > TOLERANCE and 0.0 < kl <= KL_TOLERANCE
