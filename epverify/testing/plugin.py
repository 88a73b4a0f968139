"""pytest plugin for testing circuit-finding methods against Tracr ground truth (entry point `epverify`).

Installed with epverify, it gives every test suite two fixtures (disable with `-p no:epverify`):

- `tracr_zoo`: {name: CompiledModel} of every shipped compiled program (session-scoped; no JAX needed);
- `assert_recovers`: the function below.

The method protocol. A method is a callable

    method(masked_model: epverify.MaskedModel, data: epverify.PruneData, ablation: str) -> edges

called once per program with the program's dataset (clean inputs, corrupted partners, the loss positions:
every real position after BOS) and the ablation name. It returns either

- a set (or list) of (writer, reader) edges: its circuit; or
- edge scores, a tensor (num_edges,) in edge order (`masked_model.edges`): its circuit is the edges scoring
  > 0, so the method decides its own cut by the sign of its scores (as Edge Pruning keeps log-alpha > 0); a
  method that only ranks edges returns the set of its top-k edges instead, with k of its choosing; or
- an `epverify.methods.MethodResult`: its `circuit` when it decided one, else its scores as above.

Dangling edges (on no input-to-output path through the circuit) are then dropped with the extraction rule of
`epverify.io.circuit.prune_dangling` for the ablation (they provably change no output, and the ground truth has
none), and the set is compared with the program's ground truth for that ablation. A program is recovered when
the two sets are equal. `assert_recovers` fails, with a table of every program's precision, recall, and
missing and extra edges, when fewer than a fraction `min_exact` of the programs are recovered.

    def test_my_method_recovers_small_programs(assert_recovers):
        assert_recovers(my_method, programs=["count", "hist", "shift_by"], ablation="interchange")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest


@dataclass
class ProgramResult:
    """How one program came out: the method's edge set (dangling edges dropped) against the ground truth."""

    program: str
    ablation: str
    found: set
    truth: set

    @property
    def exact(self) -> bool:
        return self.found == self.truth

    @property
    def precision(self) -> float:
        return len(self.found & self.truth) / len(self.found) if self.found else float(not self.truth)

    @property
    def recall(self) -> float:
        return len(self.found & self.truth) / len(self.truth) if self.truth else 1.0


def method_edges(output, graph) -> set:
    """A method's output (edge set, score tensor or MethodResult) as a set of (writer, reader) edges."""
    import torch

    from ..errors import EpverifyError

    circuit = getattr(output, "circuit", None)
    if circuit is not None:
        output = circuit.edges
    elif hasattr(output, "scores") and hasattr(output, "graph"):
        output = output.scores
    if isinstance(output, torch.Tensor):
        if output.shape != (graph.num_edges,):
            raise EpverifyError(f"the method returned scores of shape {tuple(output.shape)}; expected"
                                f" ({graph.num_edges},): one score per edge, in edge order")
        return {graph.edges[i] for i in torch.nonzero(output.detach().cpu() > 0).flatten().tolist()}
    if isinstance(output, (set, frozenset, list, tuple)):
        edges = set()
        for edge in output:
            if isinstance(edge, str) or len(edge) != 2:
                raise EpverifyError(f"the method returned {edge!r}; an edge is a (writer, reader) pair")
            edges.add((str(edge[0]), str(edge[1])))
        graph.index_of(sorted(edges))  # unknown edges are reported by name
        return edges
    raise EpverifyError(f"the method returned a {type(output).__name__}; expected a set of (writer, reader)"
                        " edges, a score tensor (num_edges,) or a MethodResult")


def _targets(programs, ablation: str) -> list:
    """(name, masked model, data, truth(found) -> the truth to compare with) per program: a shipped name, a
    CompiledModel, a compiled-program directory or a trained model's directory (or "trained": all of those)."""
    from pathlib import Path

    from ..adapters import wrap
    from ..tracr import load, names
    from ..tracr.ground_truth import ground_truth, matching_truth
    from ..tracr.model import CompiledModel
    from ..tracr.policy import tracr_data
    from ..trained import recover as trained
    from ..trained.card import is_trained_dir, shipped

    if programs is None:
        programs = names()
    if programs == "trained":
        programs = shipped()
    if isinstance(programs, (str, Path, CompiledModel)):
        programs = [programs]
    out = []
    for program in programs:
        if not isinstance(program, CompiledModel) and is_trained_dir(program):
            masked, card = trained.load(program)
            truth = set(card.truth(ablation))
            out.append((card.name, masked, card.prune_data(), lambda found, truth=truth: truth))
            continue
        model = program if isinstance(program, CompiledModel) else load(program)
        if ablation not in model.ground_truth:
            model.ground_truth[ablation] = ground_truth(model, ablation)
        out.append((model.name, wrap(model), tracr_data(model),
                    lambda found, recorded=model.ground_truth[ablation]: matching_truth(recorded, found)))
    return out


def recovery_results(method: Callable, programs: Iterable | None = None,
                     ablation: str = "interchange") -> list[ProgramResult]:
    """Run `method` on each program (names, CompiledModels, directories of compiled programs or trained models,
    or "trained"; None: the whole compiled zoo) and compare with its known circuit."""
    from ..io.circuit import prune_dangling

    results = []
    for name, masked, data, truth_of in _targets(programs, ablation):
        output = method(masked, data, ablation)
        found = prune_dangling(masked.graph, method_edges(output, masked.graph), ablation)
        results.append(ProgramResult(name, ablation, found, truth_of(found)))
    return results


def format_results(results: list[ProgramResult]) -> str:
    lines = [f"{'program':18s} {'truth':>5s} {'found':>5s} {'precision':>9s} {'recall':>6s}  exact  "
             "differences"]
    for r in results:
        missing = ", ".join(f"{w}->{x}" for w, x in sorted(r.truth - r.found))
        extra = ", ".join(f"{w}->{x}" for w, x in sorted(r.found - r.truth))
        parts = (missing and f"missing {missing}", extra and f"extra {extra}")
        diff = "; ".join(part for part in parts if part)
        lines.append(f"{r.program:18s} {len(r.truth):5d} {len(r.found):5d} {r.precision:9.3f} {r.recall:6.3f}"
                     f"  {'yes' if r.exact else 'NO ':5s}  {diff}")
    return "\n".join(lines)


def assert_recovers(method: Callable, programs: Iterable | None = None, ablation: str = "interchange",
                    min_exact: float = 1.0) -> list[ProgramResult]:
    """Assert that `method` (the protocol: module docstring) recovers the ground truth of at least a fraction
    `min_exact` of `programs` (shipped names, CompiledModels, model directories, "trained"; None: every shipped
    compiled program) under `ablation`.
    Returns the per-program results; raises AssertionError with a table when it falls short."""
    results = recovery_results(method, programs, ablation)
    exact = sum(r.exact for r in results)
    if exact < min_exact * len(results):
        name = getattr(method, "__name__", type(method).__name__)
        raise AssertionError(f"{name} recovered {exact}/{len(results)} programs exactly under {ablation}"
                             f" ablation (needed at least {min_exact:.0%}):\n{format_results(results)}")
    return results


@pytest.fixture(scope="session")
def tracr_zoo() -> dict:
    """Every shipped compiled Tracr program, by name."""
    from ..tracr import load, names

    return {name: load(name) for name in names()}


@pytest.fixture(name="assert_recovers")
def assert_recovers_fixture() -> Callable:
    """`epverify.testing.plugin.assert_recovers`, as a fixture."""
    return assert_recovers
