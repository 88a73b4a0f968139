"""Recover the ground-truth circuit of a compiled Tracr program with Edge Pruning, and score the result."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

from ..adapters.tracr import TracrAdapter
from ..eval.checks import flag_empty
from ..eval.evaluator import Evaluator
from ..eval.recovery import RecoveryReport, in_processes, recovery_report, torch_threads
from ..methods.edge_pruning import edge_pruning
from ..train import PruneConfig
from .ground_truth import ground_truth, matching_truth
from .model import CompiledModel
from .policy import tracr_config, tracr_data


def recover(compiled: CompiledModel, ablation: str = "interchange", seed: int = 0,
            config: PruneConfig | None = None, progress=None, threads: int = 1) -> RecoveryReport:
    """Prune a compiled program and compare the circuit found with its ground truth for this ablation; the
    extraction is `epverify prune`'s (`eval.extraction`), its redundancy pass at the config's tolerance. The ground
    truth is computed first where the program has none for this ablation (a program compiled just now).
    `progress`: the trainer's per-step callback.

    Runs with `threads` torch threads (the caller's setting is restored afterwards): one, unless the machine is
    otherwise idle (docs/recovery.md, "Time"). One and two threads gave the same circuits, losses and AUCs on
    every program compared there."""
    with torch_threads(threads):
        return _recover(compiled, ablation, seed, config, progress)


def _recover(compiled: CompiledModel, ablation: str, seed: int, config: PruneConfig | None,
             progress) -> RecoveryReport:
    start = time.perf_counter()
    config = replace(config or tracr_config(ablation), ablation=ablation, seed=seed)
    if ablation not in compiled.ground_truth:
        compiled.ground_truth[ablation] = ground_truth(compiled, ablation)
    adapter = TracrAdapter(compiled)
    evaluator = Evaluator(adapter, tracr_data(compiled), ablation)
    result = edge_pruning(adapter, evaluator.data, ablation, config, seed, evaluator, progress)
    circuit = result.circuit
    if compiled.ground_truth[ablation]["edges"]:
        empty = flag_empty(circuit, config.target_sparsity, context=f"{compiled.name} ({ablation} ablation)")
    else:  # the ground truth itself is empty: an empty circuit is the right answer, not a warning
        empty = circuit.metrics["empty"] = not circuit.edges
    truth = matching_truth(compiled.ground_truth[ablation], set(circuit.edges))
    return recovery_report(compiled.name, evaluator, circuit, truth, result.scores, config,
                           time.perf_counter() - start, empty)


def recover_many(models: list[CompiledModel], ablation: str = "interchange", seed: int = 0,
                 config: PruneConfig | None = None, workers: int | None = None) -> Iterator[RecoveryReport]:
    """`recover` every program, in `workers` processes of one torch thread each (default: one per CPU, at most
    one per program); yields the reports in the order of `models` as they complete. Each recovery is
    independent and seeded, so the reports are the same as one process would give."""
    jobs = [(m, ablation, seed, config) for m in models]
    yield from in_processes(recover, jobs, workers, size=lambda job: job[0].total_edges)
