"""Edge Pruning (Bhaskar et al. 2024) in the methods' interface: `trainer.prune`, then `Circuit.from_masks`.

Scores are the trained edge log-alphas (an edge is kept when its log-alpha is positive, before dangling
edges are dropped). Without a config, Tracr models get the recovery defaults of the ablation
(`recover.tracr_config`) and other models `PruneConfig()`'s paper defaults (3,000 steps); the config's ablation
and seed are replaced by the arguments. For Tracr models the circuit then loses the edges the binary circuit
does not need (`evaluate.drop_redundant`, tolerance `recover.REDUNDANT_TOLERANCE`). `recover` runs this.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from ..eval.evaluate import drop_redundant
from ..eval.evaluator import as_adapter
from ..io.circuit import Circuit
from ..train.loop import PruneConfig, PruneData, prune
from .base import MethodResult


def default_config(adapter, ablation: str = "interchange") -> PruneConfig:
    from ..adapters.tracr import TracrAdapter

    if isinstance(adapter, TracrAdapter):
        from ..tracr.recover import tracr_config

        return tracr_config(ablation)
    return PruneConfig()


def redundant_tolerance(adapter) -> float | None:
    """The tolerance of the redundancy pass: `recover`'s for Tracr models, none (no pass) for other models."""
    from ..adapters.tracr import TracrAdapter

    if isinstance(adapter, TracrAdapter):
        from ..tracr.recover import REDUNDANT_TOLERANCE

        return REDUNDANT_TOLERANCE
    return None


def edge_pruning(model, data: PruneData, ablation: str = "interchange", config: PruneConfig | None = None,
                 seed: int = 0) -> MethodResult:
    """Train edge masks on `data` and extract the circuit."""
    start = time.perf_counter()
    adapter = as_adapter(model)
    config = replace(config or default_config(adapter, ablation), ablation=ablation, seed=seed)
    torch.manual_seed(seed)
    result = prune(adapter, data, config)
    circuit = Circuit.from_masks(adapter.graph, result.edge_log_alpha, result.node_log_alpha,
                                 model=adapter.summary(), ablation=ablation)
    tolerance = redundant_tolerance(adapter)
    if tolerance is not None:
        circuit = drop_redundant(adapter, data, circuit, result.edge_log_alpha, ablation, tolerance)
    scores = result.edge_log_alpha.detach().double().cpu()
    return MethodResult("edge-pruning", scores, adapter.graph, ablation, circuit=circuit,
                        seconds=time.perf_counter() - start,
                        info={"steps": config.steps, "config": result.config, "final": result.history[-1]})
