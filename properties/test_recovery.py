"""Recovery: Edge Pruning finds the exact ground-truth circuit of RASP programs it has never seen.

Programs come from `epverify.testing.strategies.rasp_programs()` (Map, SequenceMap, Select, Aggregate, SelectorWidth
over vocabularies of 2-3 integers, max_seq_len 3-4). Each is compiled with tracr, given its verified ground
truth (`epverify.tracr.ground_truth`) and pruned with `epverify.tracr.recover` and its default settings. Programs
tracr cannot compile are skipped. A failure shrinks to a small program and prints its source
(`RaspProgram(...)`), which `RaspProgram.compile()` rebuilds.

Each example costs a compile (2-5 s) and a recovery (2-20 s), so this property runs a quarter of the
profile's examples (6 under `ci`, 50 under `deep`, at least 3).
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, note, settings

import epverify
from epverify.errors import EpverifyError
from epverify.testing import strategies as eps

pytest.importorskip("tracr", reason="compiling RASP needs tracr (pip install 'epverify[tracr]')")

EXAMPLES = max(3, settings().max_examples // 4)


@settings(max_examples=EXAMPLES)
@given(eps.rasp_programs())
def test_generated_programs_are_recovered_exactly(program):
    """Every compilable program of the grammar is recovered exactly under interchange ablation."""
    from epverify.tracr.ground_truth import ground_truth

    note(repr(program))
    try:
        model = program.compile()
    except EpverifyError as err:
        note(f"skipped: {err}")
        assume(False)
    model.ground_truth["interchange"] = ground_truth(model, "interchange")
    report = epverify.recover(model, "interchange")
    found = {tuple(e) for e in report.found_edges}
    truth = {tuple(e) for e in report.truth_edges}
    assert report.exact, (f"{program!r}: missing {sorted(truth - found)}, extra {sorted(found - truth)}"
                          f" (loss {report.faithfulness:.3g}, accuracy {report.accuracy:.3f})")


def test_recovering_in_worker_processes_gives_the_same_reports():
    """`recover_many` (one process per program, as `epverify recover all` runs) reports exactly what `recover`
    reports in this process, in the order given; the empty ground truth of `length` under interchange is found
    empty and flagged so, and recovery leaves the caller's torch thread count as it was."""
    import torch

    from epverify.tracr import zoo
    from epverify.tracr.model import CompiledModel
    from epverify.tracr.recover import recover_many

    models = [CompiledModel.load(zoo.ROOT / name) for name in ("length", "count")]
    threads = torch.get_num_threads()
    alone = [epverify.recover(m, "interchange", seed=1) for m in models]
    assert torch.get_num_threads() == threads
    parallel = list(recover_many(models, "interchange", seed=1, workers=2))
    for a, b in zip(alone, parallel):
        assert (a.program, a.found_edges, a.exact, a.empty) == (b.program, b.found_edges, b.exact, b.empty)
    assert [r.program for r in parallel] == ["length", "count"]
    assert parallel[0].exact and parallel[0].empty and not parallel[0].truth_edges
    assert parallel[1].exact and not parallel[1].empty
