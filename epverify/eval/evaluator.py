"""Measuring a circuit on a dataset: faithfulness loss, logit difference and accuracy, for any edge mask.

Every metric is taken at the dataset's loss positions (`PruneData.loss_mask`) and compared with two reference
runs computed once: the full model (every edge kept) and the empty circuit (every edge ablated).

- `loss`: the faithfulness loss the trainer minimises, KL(p_full || p_circuit) of the outputs times
  `adapter.output_scale` for a distribution, the squared error for a numerical output (`trainer.Faithfulness`;
  the tests check the two agree). Lower is better; 0 for the full model.
- `logit_diff`: logit of the target minus logit of the distractor. A task gives both per example
  (`target_ids`, `distractor_ids`, e.g. `TaskBatch`); otherwise the target is the full model's decision
  (argmax) and the distractor the empty circuit's highest output other than the target (for interchange: the
  answer on the corrupted input). For a numerical output it is the output signed towards the full model,
  sign(y_full - y_empty) * y. Higher is better. Being linear in the outputs, its gradient does not vanish at
  the full model, unlike the loss's: it is the default metric of the gradient methods (EAP, EAP-IG).
- `accuracy`: the fraction of loss positions whose decision (`adapter.decide`) matches the full model's.

`MaskEvaluator` caches the ablated runs of its batches (the corrupted runs, for interchange), so evaluating
many masks (a faithfulness curve, ACDC's thousands of trials) costs one masked forward per batch and mask.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..adapters.base import Adapter
from ..core import engine
from ..errors import EpverifyError
from ..train.loop import AblationSource, PruneData

METRICS = ("loss", "logit_diff", "accuracy")

# A differentiable metric of one batch: (logits (B, T, V), batch number) -> the SUM over the batch's loss
# positions. Divide by `MaskEvaluator.n_positions` for the dataset mean.
BatchMetric = Callable[[torch.Tensor, int], torch.Tensor]


def as_adapter(model) -> Adapter:
    """An Adapter from an Adapter, a MaskedModel, a Tracr CompiledModel or a supported Hugging Face model."""
    from ..adapters import adapter_for
    from ..core.masked import MaskedModel

    if isinstance(model, MaskedModel):
        return model.adapter
    return adapter_for(model)


class MaskEvaluator:
    """The dataset cut into fixed batches, with each batch's ablated run and reference outputs cached.

    rows: which examples to use (default: all), in order; batches are consecutive slices of `batch_size` rows.
    Under resample ablation a batch's rows are rolled within the batch, so the batching is part of the
    ablation: methods and curves that share an evaluator share it.
    """

    def __init__(self, model, data: PruneData, ablation: str = "interchange", batch_size: int = 256,
                 rows: torch.Tensor | None = None, target_ids: torch.Tensor | None = None,
                 distractor_ids: torch.Tensor | None = None):
        if ablation not in engine.ABLATIONS:
            raise EpverifyError(f"unknown ablation {ablation!r}: choose one of {', '.join(engine.ABLATIONS)}")
        if (target_ids is None) != (distractor_ids is None):
            raise EpverifyError("give both target_ids and distractor_ids (one id per example), or neither")
        if batch_size < 1:
            raise EpverifyError(f"batch size must be at least 1, got {batch_size}")
        self.adapter = as_adapter(model)
        self.graph = self.adapter.graph
        self.data, self.ablation = data, ablation
        self.numerical = self.adapter.output_kind != "distribution"
        self.loss_name = "mse" if self.numerical else "kl"
        rows = torch.arange(len(data)) if rows is None else torch.as_tensor(rows, dtype=torch.long)
        if ablation == "resample" and len(rows) < 2:
            raise EpverifyError("resample ablation needs at least 2 examples")
        self.batches = list(rows.split(batch_size))
        if ablation == "resample" and len(self.batches) > 1 and len(self.batches[-1]) < 2:
            self.batches[-2] = torch.cat(self.batches[-2:])  # a last batch of one cannot be resampled
            self.batches.pop()
        source = AblationSource(self.adapter, data, ablation, batch_size)
        device = self.adapter.device
        self.ablated: list[engine.Record] = []
        self.positions: list[torch.Tensor] = []  # per batch (B, T) bool
        self.full: list[torch.Tensor] = []  # per batch (P, V): log-probs, or outputs if numerical
        self.full_decision: list[torch.Tensor] = []  # per batch (P,)
        self.direction: list[torch.Tensor] = []  # per batch: (P, 2) target/distractor ids, or (P, V) signs
        ones = torch.ones(self.graph.num_edges, dtype=self.adapter.dtype, device=device)
        zeros = torch.zeros_like(ones)
        with torch.no_grad():
            for index in self.batches:
                ablated = source(index)
                self.ablated.append(ablated)
                where = data.loss_mask[index].to(device)
                self.positions.append(where)
                full = self._outputs(self.run(ones, len(self.ablated) - 1), where)
                empty = self._outputs(self.run(zeros, len(self.ablated) - 1), where)
                self.full.append(self._prepare(full))
                self.full_decision.append(self.adapter.decide(full))
                self.direction.append(self._direction(full, empty, index, where, target_ids, distractor_ids))
        self.n_positions = int(sum(int(p.sum()) for p in self.positions))
        if self.n_positions == 0:
            raise EpverifyError("no loss position in the selected rows: check loss_mask")

    # ----- running ------------------------------------------------------------------------------------------
    def run(self, edge_mask: torch.Tensor, batch: int) -> torch.Tensor:
        """Logits (B, T, V) of batch `batch`, edges weighted by `edge_mask` (gradients flow through it)."""
        index = self.batches[batch]
        device = self.adapter.device
        return engine.masked_run(self.adapter, self.data.input_ids[index].to(device), self.ablated[batch],
                                 edge_mask.to(device=device, dtype=self.adapter.dtype), None,
                                 self.data.attention_mask[index].to(device))

    def __len__(self) -> int:
        return len(self.batches)

    # ----- metrics of one batch (sums over its loss positions) ----------------------------------------------
    def loss(self, logits: torch.Tensor, batch: int) -> torch.Tensor:
        out = self._prepare(self._outputs(logits, self.positions[batch]))
        full = self.full[batch]
        if self.numerical:
            return ((out - full) ** 2).sum()
        return (full.exp() * (full - out)).sum()

    def logit_diff(self, logits: torch.Tensor, batch: int) -> torch.Tensor:
        out = self._outputs(logits, self.positions[batch])
        direction = self.direction[batch]
        if self.numerical:
            return (out * direction).sum()
        return (out.gather(1, direction[:, :1]) - out.gather(1, direction[:, 1:])).sum()

    def accuracy(self, logits: torch.Tensor, batch: int) -> torch.Tensor:
        decided = self.adapter.decide(self._outputs(logits, self.positions[batch]))
        return (decided == self.full_decision[batch]).sum().to(torch.float64)

    def metric(self, name: str | BatchMetric) -> BatchMetric:
        """A batch metric by name (`loss`, `logit_diff`, `accuracy`), or a callable passed through."""
        if callable(name):
            return name
        if name in ("kl", "mse"):
            name = "loss"
        if name not in METRICS:
            raise EpverifyError(f"unknown metric {name!r}: choose one of {', '.join(METRICS)} or pass a"
                                " callable (logits, batch) -> sum over the batch's loss positions")
        return getattr(self, name)

    # ----- whole-dataset evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, edge_mask: torch.Tensor, metrics=METRICS) -> dict[str, float]:
        """Dataset means of the metrics for one edge mask; the loss is reported as `kl` or `mse`."""
        fns = {name: self.metric(name) for name in metrics}
        totals = dict.fromkeys(fns, 0.0)
        for batch in range(len(self)):
            logits = self.run(edge_mask, batch)
            for name, fn in fns.items():
                totals[name] += float(fn(logits, batch))
        out = {}
        for name, total in totals.items():
            key = self.loss_name if name == "loss" else name
            out[key] = total / self.n_positions
        return out

    @torch.no_grad()
    def mean_loss(self, edge_mask: torch.Tensor) -> float:
        """The faithfulness loss alone (ACDC's inner loop)."""
        return sum(float(self.loss(self.run(edge_mask, b), b)) for b in range(len(self))) / self.n_positions

    # ----- helpers ------------------------------------------------------------------------------------------
    def _outputs(self, logits: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return logits[where].float()

    def _prepare(self, outputs: torch.Tensor) -> torch.Tensor:
        scaled = outputs * self.adapter.output_scale
        return scaled if self.numerical else torch.log_softmax(scaled, -1)

    def _direction(self, full, empty, index, where, target_ids, distractor_ids) -> torch.Tensor:
        if self.numerical:
            return torch.sign(full - empty)
        if target_ids is not None:
            per_row = where.sum(1).cpu()
            target = target_ids[index].repeat_interleave(per_row).to(full.device)
            distractor = distractor_ids[index].repeat_interleave(per_row).to(full.device)
        else:
            target = full.argmax(-1)
            rival = empty.clone()
            rival.scatter_(1, target[:, None], float("-inf"))
            distractor = rival.argmax(-1)
        return torch.stack([target, distractor], 1)
