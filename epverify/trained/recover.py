"""Recover the known circuit of a trained model with exactly what `epverify prune` runs on a Hugging Face checkpoint.

The same training function, estimator (pathwise) and `PruneConfig` defaults as `epverify prune`, with one
documented exception (`RECOVERY`): the target sparsity. A user picks a target; here the circuit's size is what is
being tested, so the target is set past 1 and the sparsity term pushes until an edge's price reaches the ceiling
of `PruneConfig.max_edge_price`: the edges kept are those whose removal costs more than that. Then the extraction
rule (log-alpha > 0, dangling edges dropped, then the redundancy pass: `eval.extraction`) and the comparison with
the card's verified circuit.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import EpverifyError
from ..eval.checks import flag_empty
from ..eval.evaluator import Evaluator
from ..eval.extraction import extract
from ..eval.recovery import RecoveryReport, in_processes, recovery_report, torch_threads
from ..train import PruneConfig, prune
from .card import CHECKED_ABLATIONS, Card, load_card
from .verify import BARS

RECOVERY = {"target_sparsity": 1.02}  # the one setting recovery changes from `PruneConfig()`: see the docstring


def recovery_config(ablation: str = "interchange", seed: int = 0) -> PruneConfig:
    """`PruneConfig()` with the recovery exception, the ablation and the seed."""
    return replace(PruneConfig(), **RECOVERY, ablation=ablation, seed=seed)


def load(path: str | Path):
    """(masked model, card) of a trained model directory, the card checked against the model's graph."""
    from ..adapters import wrap_pretrained

    path = Path(path)
    load_card(path)  # not a trained model: one line before the weights are read
    masked = wrap_pretrained(path)
    return masked, load_card(path, masked.graph)


def check_truth(evaluator: Evaluator, card: Card) -> None:
    """Refuse a card whose circuit no longer holds on the weights (the circuit alone far from the full model)."""
    truth = card.truth(evaluator.ablation)
    mask = torch.zeros(evaluator.graph.num_edges)
    if truth:
        mask[evaluator.graph.index_of(truth)] = 1.0
    loss = evaluator.mean_loss(mask)
    if not loss <= BARS["kl"]:
        raise EpverifyError(f"{card.path}: the card's {evaluator.ablation} circuit does not hold on these weights"
                            f" (its KL to the full model is {loss:.3g} nats per position, the card's bar is"
                            f" {BARS['kl']}): rebuild the model and its card with `make trained`")


def recover(path: str | Path, ablation: str = "interchange", seed: int = 0,
            config: PruneConfig | None = None, threads: int = 1) -> RecoveryReport:
    """Prune a trained model on its card's dataset as `epverify prune` does and compare with its known circuit.
    With `threads` torch threads (restored afterwards): one, as `recover_many` runs one process per CPU, unless the
    machine is otherwise idle."""
    with torch_threads(threads):
        return _recover(path, ablation, seed, config)


def _recover(path, ablation: str, seed: int, config: PruneConfig | None) -> RecoveryReport:
    if ablation not in CHECKED_ABLATIONS:
        raise EpverifyError(f"trained models have known circuits under {' and '.join(CHECKED_ABLATIONS)} ablation,"
                            f" not {ablation}")
    start = time.perf_counter()
    masked, card = load(path)
    config = replace(config or recovery_config(), ablation=ablation, seed=seed)
    data = card.prune_data()
    evaluator = Evaluator(masked, data, ablation)
    check_truth(evaluator, card)
    torch.manual_seed(seed)
    result = prune(masked.adapter, data, config)
    circuit = extract(evaluator, result, config, model={**masked.adapter.summary(), "path": str(path)})
    empty = flag_empty(circuit, config.target_sparsity, context=f"{card.name} ({ablation} ablation)")
    return recovery_report(card.name, evaluator, circuit, set(card.truth(ablation)),
                           result.edge_log_alpha.detach().double().cpu(), config, time.perf_counter() - start, empty)


def recover_many(paths: list, ablation: str = "interchange", seed: int = 0, config: PruneConfig | None = None,
                 workers: int | None = None):
    """`recover` every model, one process per CPU; reports in the order of `paths`."""
    yield from in_processes(recover, [(str(p), ablation, seed, config) for p in paths], workers)
