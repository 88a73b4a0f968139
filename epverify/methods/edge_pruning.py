"""Edge Pruning (Bhaskar et al. 2024) in the methods' interface: `train.prune`, then `eval.extraction.extract`.

Scores are the trained edge log-alphas (an edge is kept when its log-alpha is positive, before dangling edges and
the edges the binary circuit does not need are dropped). The config defaults to `PruneConfig()`; its ablation and
seed are replaced by the arguments. Presets for a kind of model are passed in by the caller: `recover` passes the
compiled programs' (`epverify.tracr.policy.tracr_config`).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from ..core.dataset import PruneData
from ..eval.evaluator import Evaluator, as_adapter
from ..eval.extraction import extract
from ..train import PruneConfig, prune
from .base import MethodResult


def edge_pruning(model, data: PruneData, ablation: str = "interchange", config: PruneConfig | None = None,
                 seed: int = 0, evaluator: Evaluator | None = None, progress=None) -> MethodResult:
    """Train edge masks on `data` and extract the circuit. `evaluator`: extraction's, when the caller has one for
    this model, data and ablation already; `progress`: the trainer's per-step callback."""
    start = time.perf_counter()
    adapter = as_adapter(model)
    config = replace(config or PruneConfig(), ablation=ablation, seed=seed)
    torch.manual_seed(seed)
    result = prune(adapter, data, config, progress=progress)
    circuit = extract(evaluator or Evaluator(adapter, data, ablation), result, config, model=adapter.summary())
    scores = result.edge_log_alpha.detach().double().cpu()
    return MethodResult("edge-pruning", scores, adapter.graph, ablation, circuit=circuit,
                        seconds=time.perf_counter() - start,
                        info={"steps": config.steps, "config": result.config, "final": result.history[-1]})
