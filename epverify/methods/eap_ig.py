"""EAP with integrated gradients over the inputs (EAP-IG; Hanna et al. 2024).

    score(w -> r) = < h_w - h~_w ,  (1/m) sum_{k=1..m} dM/dx_r (x^(k/m)) >

where x^(a) is the model run on interpolated input embeddings e~ + a (e - e~) (e: the clean embedding writers'
outputs, e~: the ablated run's, i.e. the corrupted input's under interchange), dM/dx_r the metric's gradient
at reader r's input in that run, and h_w - h~_w the writer's clean-minus-ablated output from the full runs
(fixed across steps). With m = 1 it is EAP exactly (the tests check it).

How it runs on the engine: as mask gradients at z = 1, like EAP, in a masked run that reproduces the model on
the interpolated input while its writer deltas stay the clean ones. The mask gradient of edge w -> r in a
masked run is <dM/dx_r, h_w(run) - A_w> for the ablated record A it is given, and with every edge kept each
reader's input is A's residual plus the sum of the deltas. So for a = k/m, with R_a the full run on the
interpolated embeddings (the adapter's `embed` swapped for them), R_1 the clean run and R~ the ablated run,
the record

    A = R_a - R_1 + R~   (every field; its embeddings are R~'s)

makes each reader's input exactly its input in R_a (the residual is the sum of the writers' outputs plus
constant biases), hence each writer's output h_w(a), and each delta h_w(a) - A_w = h_w - h~_w. One no-grad
full run and one forward+backward per step; at a = 1, A = R~ and the step is EAP. Averaging the plain mask
gradients over interpolated runs instead would use the interpolated deltas h_w(a) - h~_w: integrated gradients
over the masks, not over the inputs.

Under zero and mean ablation e~ is the zero or mean embedding: the path runs from the model on that input to
the clean model. Cost: m forward+backward passes (default m = 5). Unlike EAP, the faithfulness loss works here
(its gradient vanishes only at a = 1); the default metric is still the logit difference, as for EAP.
"""

from __future__ import annotations

import time
from dataclasses import fields

import torch

from ..adapters.base import Adapter
from ..core import engine
from ..core.dataset import PruneData
from ..errors import EpverifyError
from ..eval.evaluator import BatchMetric, Evaluator, as_adapter
from .base import MethodResult


class _Embedded:
    """The adapter with its embedding writers' outputs replaced by fixed ones (the rest falls through)."""

    def __init__(self, inner: Adapter, embeds: torch.Tensor):
        self.inner, self.embeds = inner, embeds

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, input_ids):
        return self.embeds


def _shifted(interpolated: engine.Record, clean: engine.Record, ablated: engine.Record) -> engine.Record:
    """interpolated - clean + ablated, field by field, with the ablated run's embeddings."""
    out = {}
    for f in fields(engine.Record):
        a, c, b = getattr(interpolated, f.name), getattr(clean, f.name), getattr(ablated, f.name)
        if f.name == "embeds":
            out[f.name] = b
        elif a is None or b is None:
            out[f.name] = None
        elif isinstance(a, list):
            out[f.name] = [x - y + z for x, y, z in zip(a, c, b, strict=True)]
        else:
            out[f.name] = a - c + b
    return engine.Record(**out)


def eap_ig(model, data: PruneData, ablation: str = "interchange", metric: str | BatchMetric = "logit_diff",
           steps: int = 5, batch_size: int = 256, evaluator: Evaluator | None = None) -> MethodResult:
    """EAP-IG scores of every edge (magnitudes; signed values in `info["signed"]`).

    steps: m, the number of interpolation points a = 1/m, 2/m, ..., 1. metric: as for `eap`.
    """
    if steps < 1:
        raise EpverifyError(f"EAP-IG needs at least 1 step, got {steps}")
    start = time.perf_counter()
    adapter = as_adapter(model)
    ev = evaluator or Evaluator(adapter, data, ablation, batch_size)
    fn = ev.metric(metric)
    graph = adapter.graph
    signed = torch.zeros(graph.num_edges, dtype=torch.float64)
    for batch in range(len(ev)):
        index = ev.batches[batch]
        ids, mask = ev.data.input_ids[index], ev.data.attention_mask[index]
        ablated = ev.ablated(batch)
        with torch.no_grad():
            clean = engine.full_run(adapter, ids, mask)
        for k in range(1, steps + 1):
            record = ablated
            if k < steps:
                with torch.no_grad():
                    embeds = ablated.embeds + (k / steps) * (clean.embeds - ablated.embeds)
                    record = _shifted(engine.full_run(_Embedded(adapter, embeds), ids, mask), clean, ablated)
            z = torch.ones(graph.num_edges, dtype=adapter.dtype, device=adapter.device, requires_grad=True)
            value = fn(ev.run(z, batch, ablated=record), batch) / (ev.n_positions * steps)
            (grad,) = torch.autograd.grad(value, z)
            signed += grad.detach().double().cpu()
    return MethodResult("eap-ig", signed.abs(), graph, ev.ablation, seconds=time.perf_counter() - start,
                        info={"signed": signed, "steps": steps,
                              "metric": metric if isinstance(metric, str) else "callable"})
