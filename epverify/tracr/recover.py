"""Recover the ground-truth circuit of a compiled Tracr program with Edge Pruning, and score the result."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import torch

from ..adapters.tracr import TracrAdapter
from ..eval.checks import flag_empty
from ..eval.compare import precision_recall, roc_auc, truth_mask
from ..eval.evaluator import Evaluator
from ..methods.edge_pruning import edge_pruning
from ..train import PruneConfig
from .ground_truth import ground_truth, matching_truth
from .model import CompiledModel
from .policy import REDUNDANT_TOLERANCE, tracr_config, tracr_data


@dataclass
class RecoveryReport:
    program: str
    ablation: str
    total_edges: int
    truth_edges: list
    found_edges: list
    precision: float
    recall: float
    exact: bool
    auc: float | None
    faithfulness: float
    accuracy: float
    steps: int
    seconds: float
    dropped_dangling: int
    dropped_redundant: int
    empty: bool = False  # no edge survived extraction (see epverify.eval.checks.flag_empty)
    estimator: str = ""  # the training run's estimator and its whole config, as `PruneConfig.to_dict` gives it
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


TRACR_THREADS = 1  # Tracr models are tiny: a second torch thread mostly spins (6-13x slower on a shared machine)


def recover(compiled: CompiledModel, ablation: str = "interchange", seed: int = 0,
            config: PruneConfig | None = None) -> RecoveryReport:
    """Prune a compiled program and compare the circuit found with its ground truth for this ablation.

    Runs with one torch thread (restored afterwards): see docs/recovery.md, "Time"."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TRACR_THREADS)
    try:
        return _recover(compiled, ablation, seed, config)
    finally:
        torch.set_num_threads(threads)


def _recover(compiled: CompiledModel, ablation: str, seed: int, config: PruneConfig | None) -> RecoveryReport:
    start = time.perf_counter()
    config = replace(config or tracr_config(ablation), ablation=ablation, seed=seed)
    if ablation not in compiled.ground_truth:
        compiled.ground_truth[ablation] = ground_truth(compiled, ablation)
    adapter = TracrAdapter(compiled)
    graph = adapter.graph
    evaluator = Evaluator(adapter, tracr_data(compiled), ablation)
    # trained, extracted, redundant edges dropped
    result = edge_pruning(adapter, evaluator.data, ablation, config, seed, REDUNDANT_TOLERANCE, evaluator)
    circuit = result.circuit
    if compiled.ground_truth[ablation]["edges"]:
        empty = flag_empty(circuit, config.target_sparsity, context=f"{compiled.name} ({ablation} ablation)")
    else:  # the ground truth itself is empty: an empty circuit is the right answer, not a warning
        empty = circuit.metrics["empty"] = not circuit.edges
    found = set(circuit.edges)
    truth = matching_truth(compiled.ground_truth[ablation], found)
    metrics = evaluator.evaluate(circuit.mask(graph), ("loss", "accuracy"))
    precision, recall = precision_recall(found, truth)
    return RecoveryReport(
        program=compiled.name, ablation=ablation, total_edges=graph.num_edges,
        truth_edges=sorted(map(list, truth)), found_edges=[list(e) for e in circuit.edges],
        precision=precision, recall=recall, exact=found == truth,
        auc=roc_auc(result.scores, truth_mask(graph, truth)), faithfulness=metrics[evaluator.loss_name],
        accuracy=metrics["accuracy"], steps=config.steps, seconds=time.perf_counter() - start,
        dropped_dangling=circuit.dropped_dangling, dropped_redundant=circuit.dropped_redundant, empty=empty,
        estimator=config.estimator, config=config.to_dict(),
    )


def _recover_job(job) -> RecoveryReport:
    compiled, ablation, seed, config = job
    return recover(compiled, ablation, seed, config)


def recover_many(models: list[CompiledModel], ablation: str = "interchange", seed: int = 0,
                 config: PruneConfig | None = None, workers: int | None = None) -> Iterator[RecoveryReport]:
    """`recover` every program, in `workers` processes of one torch thread each (default: one per CPU, at most
    one per program); yields the reports in the order of `models` as they complete. Each recovery is
    independent and seeded, so the reports are the same as one process would give."""
    workers = min(len(models), workers or os.cpu_count() or 1)
    jobs = [(m, ablation, seed, config) for m in models]
    if workers <= 1:
        yield from map(_recover_job, jobs)
        return
    # largest first, so that the longest recovery does not start last; spawned (not forked) workers, since a fork
    # of a process whose torch thread pool is running can hang
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][0].total_edges)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {i: pool.submit(_recover_job, jobs[i]) for i in order}
        for i in range(len(jobs)):
            yield futures[i].result()
