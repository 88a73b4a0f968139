"""Edge Pruning (Bhaskar et al. 2024) in the methods' interface: `train.prune`, then `Circuit.from_masks`.

Scores are the trained edge log-alphas (an edge is kept when its log-alpha is positive, before dangling edges are
dropped). The config defaults to `PruneConfig()`; its ablation and seed are replaced by the arguments. With
`redundant_tolerance` the circuit then loses the edges the binary circuit does not need
(`eval.redundancy.drop_redundant`). Presets for a kind of model are passed in by the caller: `recover` passes the
compiled programs' (`epverify.tracr.policy.edge_pruning_options`).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from ..core.dataset import PruneData
from ..eval.evaluator import Evaluator, as_adapter
from ..eval.redundancy import drop_redundant
from ..io.circuit import Circuit
from ..train import PruneConfig, prune
from .base import MethodResult


def edge_pruning(model, data: PruneData, ablation: str = "interchange", config: PruneConfig | None = None,
                 seed: int = 0, redundant_tolerance: float | None = None,
                 evaluator: Evaluator | None = None) -> MethodResult:
    """Train edge masks on `data` and extract the circuit. `evaluator`: the redundancy pass's, when the caller
    has one for this model, data and ablation already."""
    start = time.perf_counter()
    adapter = as_adapter(model)
    config = replace(config or PruneConfig(), ablation=ablation, seed=seed)
    torch.manual_seed(seed)
    result = prune(adapter, data, config)
    circuit = Circuit.from_masks(adapter.graph, result.edge_log_alpha, result.node_log_alpha,
                                 model=adapter.summary(), ablation=ablation)
    if redundant_tolerance is not None:
        evaluator = evaluator or Evaluator(adapter, data, ablation)
        circuit = drop_redundant(evaluator, circuit, result.edge_log_alpha, redundant_tolerance)
    scores = result.edge_log_alpha.detach().double().cpu()
    return MethodResult("edge-pruning", scores, adapter.graph, ablation, circuit=circuit,
                        seconds=time.perf_counter() - start,
                        info={"steps": config.steps, "config": result.config, "final": result.history[-1]})
