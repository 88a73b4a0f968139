"""Edge Attribution Patching (EAP; Syed et al. 2023): a first-order estimate of every edge's effect at once.

EAP scores edge w -> r by (h_w - h~_w) . dM/dx_r: the writer's clean-minus-ablated output against the gradient
of the metric M at the reader's input, in the run with every edge kept. On this engine that is exactly the
gradient of M with respect to the edge mask at z = 1:

    x_r = resid~(r) + sum_w z_wr (h_w - h~_w)   =>   dM/dz_wr = <dM/dx_r, h_w - h~_w>

and at z = 1 the masked run is the full model, so h_w and dM/dx_r are the clean run's. One forward and one
backward of `engine.masked_run` with the masks as a leaf tensor give every edge's score: the engine already
computes the mask gradient as one matrix product per reader group (`_Mix.backward`). That is why EAP is cheap
here: its cost is one pruning step's.

The metric must have a non-zero gradient at the full model. The faithfulness loss (KL to the full model)
does not: the full model is its minimum, so every first-order score is 0 up to float rounding, and whatever
ranking EAP with `metric="loss"` gives is rounding noise (on numerical Tracr outputs, exact zeros: AUC 0.5).
Use EAP-IG for the loss. The default is the logit difference (`epverify.eval.evaluator`), linear in the outputs.

Scores are ranked by magnitude (an edge that hurts the metric matters as much as one that helps); the signed
gradients are kept in `info["signed"]`. Being first order, EAP underrates edges into saturated attention: on
the trained induction model the previous-token -> induction-head key edge, whose head attends 0.998 to its
target, ranks in the bottom half (docs/benchmarks.md); EAP-IG ranks it higher.
"""

from __future__ import annotations

import time

import torch

from ..core.dataset import PruneData
from ..eval.evaluator import BatchMetric, Evaluator, as_adapter
from .base import MethodResult


def eap(model, data: PruneData, ablation: str = "interchange", metric: str | BatchMetric = "logit_diff",
        batch_size: int = 256, evaluator: Evaluator | None = None) -> MethodResult:
    """EAP scores of every edge: |dM/dz| at z = 1, M the dataset mean of `metric` over the loss positions.

    metric: "logit_diff" (default), "loss" (vanishes at z = 1: see the module docstring), or a callable
    (outputs at the loss positions (P, V), batch number) -> their sum (see `Evaluator`).
    evaluator: reuse one built for this model, data and ablation (it caches the ablated runs).
    """
    start = time.perf_counter()
    adapter = as_adapter(model)
    ev = evaluator or Evaluator(adapter, data, ablation, batch_size)
    fn = ev.metric(metric)
    graph = adapter.graph
    signed = torch.zeros(graph.num_edges, dtype=torch.float64)
    for batch in range(len(ev)):
        z = torch.ones(graph.num_edges, dtype=adapter.dtype, device=adapter.device, requires_grad=True)
        value = fn(ev.run(z, batch), batch) / ev.n_positions
        (grad,) = torch.autograd.grad(value, z)
        signed += grad.detach().double().cpu()
    return MethodResult("eap", signed.abs(), graph, ev.ablation, seconds=time.perf_counter() - start,
                        info={"signed": signed, "metric": metric if isinstance(metric, str) else "callable"})
