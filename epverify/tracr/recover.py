"""Recover the ground-truth circuit of a compiled Tracr program with Edge Pruning, and score the result."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace

import torch

from ..adapters.tracr import TracrAdapter
from ..eval.checks import flag_empty
from ..eval.evaluate import evaluate, roc_auc
from ..methods.edge_pruning import edge_pruning
from ..train.loop import PruneConfig, PruneData
from .data import dataset
from .ground_truth import ground_truth, matching_truth
from .model import CompiledModel

# Defaults for Tracr programs (see docs/recovery.md for why these values and what each one fixed). Tracr models
# are piecewise constant in the masks, so the gradient comes from the score function of the gate noise, gated by
# its running significance; Adam forgets fast (beta2 0.9) so a noise spike does not freeze an edge; under
# interchange, rows whose corrupted partner gives the same output are sampled a tenth as often (importance-weighted).
TRACR_CONFIG = PruneConfig(target_sparsity=1.02, steps=500, warmup_steps=250, lr=0.1, lambda_lr=0.01,
                           batch_size=64, estimator="score", score_samples=2, score_gate=3.0, score_decay=0.99,
                           adam_beta2=0.9, example_focus=0.1)
# Zero ablation takes away an edge's whole signal, and a circuit's rarely used mechanism is then cheap (a 5-edge
# chain worth 0.036 nats in shuffle_dyck): near-binary gates (temperature 0.1), 4 masks per row, a looser gate and
# a slower descent give such edges their evidence before the pruning pressure reaches them, and the price of one
# edge stops at 0.01 nats so that it cannot outgrow what an edge of a small graph is worth (docs/recovery.md,
# cause 7). It costs about 2.5x the interchange defaults per program.
# Edges that matter on few rows get their evidence in bursts (shuffle_dyck2's `a0.h0 > m0`: 6 of 340 inputs), so
# the gate does not let the price push down an edge whose running estimate outweighs it (`score_hold`).
TRACR_ZERO_CONFIG = replace(TRACR_CONFIG, gate_temperature=0.1, score_samples=4, score_gate=2.0, lr=0.05, steps=700,
                            warmup_steps=350, max_edge_price=0.01, score_hold=True)
# The circuit's last extraction step drops edges the binary circuit does not need (`evaluate.drop_redundant`): an
# edge goes when the loss rises by at most this much. The least any ground-truth edge of the zoo is worth is
# 1.7e-4 nats per position (shuffle_dyck2, zero ablation); float noise on a faithful circuit's loss is below 1e-7.
REDUNDANT_TOLERANCE = 1e-6


def tracr_config(ablation: str) -> PruneConfig:
    """The recovery defaults for Tracr programs under this ablation (its `ablation` field set)."""
    return replace(TRACR_ZERO_CONFIG if ablation == "zero" else TRACR_CONFIG, ablation=ablation)


def tracr_data(model: CompiledModel) -> PruneData:
    """The program's dataset as training data: the loss is taken at every real position after BOS."""
    clean, corrupted = dataset(model.dataset)
    ids, mask = model.encode(clean)
    corrupted_ids, _ = model.encode(corrupted)
    loss_mask = mask.bool().clone()
    loss_mask[:, 0] = False
    return PruneData(ids, mask, loss_mask, corrupted_ids)


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
    data = tracr_data(compiled)
    result = edge_pruning(adapter, data, ablation, config, seed)  # trained, extracted, redundant edges dropped
    circuit = result.circuit
    if compiled.ground_truth[ablation]["edges"]:
        empty = flag_empty(circuit, config.target_sparsity, context=f"{compiled.name} ({ablation} ablation)")
    else:  # the ground truth itself is empty: an empty circuit is the right answer, not a warning
        empty = circuit.metrics["empty"] = not circuit.edges
    found = set(circuit.edges)
    truth = matching_truth(compiled.ground_truth[ablation], found)
    metrics = evaluate(adapter, data, circuit.mask(graph), ablation)
    hits = len(found & truth)
    truth_mask = torch.zeros(graph.num_edges, dtype=torch.bool)
    truth_mask[graph.index_of(sorted(truth))] = True
    return RecoveryReport(
        program=compiled.name,
        ablation=ablation,
        total_edges=graph.num_edges,
        truth_edges=sorted(map(list, truth)),
        found_edges=[list(e) for e in circuit.edges],
        precision=hits / len(found) if found else float(not truth),
        recall=hits / len(truth) if truth else 1.0,
        exact=found == truth,
        auc=roc_auc(result.scores, truth_mask),
        faithfulness=metrics.get("kl", metrics.get("mse")),
        accuracy=metrics["accuracy"],
        steps=config.steps,
        seconds=time.perf_counter() - start,
        dropped_dangling=circuit.dropped_dangling,
        dropped_redundant=circuit.dropped_redundant,
        empty=empty,
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
