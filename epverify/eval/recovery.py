"""A circuit found against a known one: the report `epverify recover` prints a row of, for compiled programs and
trained models alike, and the pool of processes that recovers many at once."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch

from ..io.circuit import Circuit
from .compare import precision_recall, roc_auc, truth_mask
from .evaluator import Evaluator


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


def recovery_report(name: str, evaluator: Evaluator, circuit: Circuit, truth: set, scores: torch.Tensor, config,
                    seconds: float, empty: bool) -> RecoveryReport:
    """Compare `circuit` (found with `config`, its edges ranked by `scores`) with the known `truth`."""
    graph = evaluator.graph
    found = set(circuit.edges)
    metrics = evaluator.evaluate(circuit.mask(graph), ("loss", "accuracy"))
    precision, recall = precision_recall(found, truth)
    return RecoveryReport(
        program=name, ablation=evaluator.ablation, total_edges=graph.num_edges,
        truth_edges=sorted(map(list, truth)), found_edges=[list(e) for e in circuit.edges],
        precision=precision, recall=recall, exact=found == truth, auc=roc_auc(scores, truth_mask(graph, truth)),
        faithfulness=metrics[evaluator.loss_name], accuracy=metrics["accuracy"], steps=config.steps,
        seconds=seconds, dropped_dangling=circuit.dropped_dangling, dropped_redundant=circuit.dropped_redundant,
        empty=empty, estimator=config.estimator, config=config.to_dict(),
    )


@contextmanager
def torch_threads(threads: int):
    """Run the block with this many torch threads, restoring the caller's setting afterwards. A recovery runs
    alone on a machine with one thread per core; in a pool (`in_processes`), or beside other jobs, with one: on a
    shared core torch's second thread spins (docs/recovery.md, "Time")."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def in_processes(fn: Callable, jobs: list, workers: int | None = None, size=None) -> Iterator:
    """`fn(*job)` for every job, in `workers` processes (default: one per CPU, at most one per job); yields the
    results in the order of `jobs` as they complete. `size(job)` orders the work, largest first, so that the
    longest does not start last. Workers are spawned (not forked): a fork of a process whose torch thread pool
    is running can hang."""
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers <= 1:
        yield from (fn(*job) for job in jobs)
        return
    order = sorted(range(len(jobs)), key=lambda i: -size(jobs[i])) if size else range(len(jobs))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {i: pool.submit(fn, *jobs[i]) for i in order}
        for i in range(len(jobs)):
            yield futures[i].result()
