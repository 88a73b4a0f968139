"""The one evaluator: the loss and the metrics of any edge mask on a dataset, for every part of epverify.

Training (the faithfulness term of the objective), `evaluate`, the redundancy pass, EAP, EAP-IG, ACDC, the
faithfulness curves and both CLIs (`prune`, `evaluate`) measure a circuit through an `Evaluator`. It holds one
`PruneData` under one ablation and computes, once: the full model's outputs at the loss positions, the ablated
runs (cached for the whole dataset when they fit in `CACHE_BYTES`), and, when a metric needs it, the empty
circuit's outputs. Every metric is taken at the dataset's loss positions:

- `loss` (reported as `kl` or `mse`): KL(p_full || p_circuit) of the outputs times `adapter.output_scale` for a
  distribution, the squared error for a numerical output. 0 for the full model; what training minimises.
- `logit_diff`: logit of the target minus logit of the distractor. With a task's `target_ids` and
  `distractor_ids` those; otherwise the target is the full model's decision and the distractor the empty
  circuit's highest output other than it. For a numerical output: sign(y_full - y_empty) * y.
- `exact_match`: the fraction of positions whose decision (`adapter.decide`) equals the full model's.
- `accuracy`: with a task's targets, the fraction of positions whose decision (among `answer_ids` when the task
  has them) is the target; without, the same as `exact_match` (a Tracr program's answer is its full model's).
  A task may define its own (`Task.score`: greater-than's "a year above the start year", and `prob_diff`).

Batches. `batches[b]` are consecutive rows (`PruneData.batches`); every method taking `rows` accepts a batch number
or an index tensor of rows. Outputs are always the rows at the loss positions, (P, V), example-major.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core import engine
from ..core.dataset import PruneData
from ..errors import EpverifyError
from .metrics import answer_choice, kl_per_position, logit_diff_per_position, squared_error_per_position

METRICS = ("loss", "logit_diff", "accuracy")
CACHE_BYTES = 256 * 2**20  # interchange: keep the corrupted runs of the whole dataset when they fit in this

# A metric of one batch: (outputs at its loss positions (P, V), batch number or rows) -> the SUM over those
# positions. Divide by `Evaluator.n_positions` for the dataset mean.
BatchMetric = Callable[[torch.Tensor, object], torch.Tensor]


def as_adapter(model):
    """An Adapter from an Adapter, a MaskedModel, a Tracr CompiledModel or a supported Hugging Face model."""
    from ..adapters import adapter_for
    from ..core.masked import MaskedModel

    if isinstance(model, MaskedModel):
        return model.adapter
    return adapter_for(model)


class Evaluator:
    """One dataset under one ablation: reference outputs and ablated runs computed once, and the loss and the
    metrics of any edge mask (module docstring).

    rows: the examples to use (default: all), cut into batches of `batch_size`; under resample ablation a batch's
    rows are rolled within the batch, so the batching is part of the ablation. task: an `epverify.tasks.Task`
    whose own metrics (`Task.score`) are added.
    """

    def __init__(self, model, data: PruneData, ablation: str = "interchange", batch_size: int = 256,
                 rows: torch.Tensor | None = None, task=None):
        if ablation not in engine.ABLATIONS:
            raise EpverifyError(f"unknown ablation {ablation!r}: choose one of {', '.join(engine.ABLATIONS)}")
        self.adapter = as_adapter(model)
        self.graph = self.adapter.graph
        self.data, self.ablation, self.task = data.to(self.adapter.device), ablation, task
        self.numerical = self.adapter.output_kind != "distribution"
        self.loss_name = "mse" if self.numerical else "kl"
        if ablation == "interchange" and data.corrupted_ids is None:
            raise EpverifyError("interchange ablation needs corrupted inputs; this dataset has none")
        if ablation == "resample" and (len(data) if rows is None else len(rows)) < 2:
            raise EpverifyError("resample ablation needs at least 2 examples")
        self.batch_size = batch_size
        self.batches = data.batches(batch_size, rows, min_last=2 if ablation == "resample" else 1)
        used = torch.cat(self.batches)
        self.n_positions = int(data.positions_per_row[used].sum())
        if self.n_positions == 0:
            raise EpverifyError("no loss position in the selected rows: check loss_mask")
        counts = data.positions_per_row.cpu()
        self._offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])  # row -> first position
        self._mean = self._mean_record(batch_size) if ablation == "mean" else None
        self._cache = self._whole_cache(batch_size)
        self._batch_records: dict[int, engine.Record] = {}
        self._memo_batches = self._record_bytes(len(used)) <= CACHE_BYTES
        self._reference(used)
        self._direction: torch.Tensor | None = None  # (P, 2) target/distractor ids, or (P, V) signs

    # ----- rows and ablated runs ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.batches)

    def rows(self, which) -> torch.Tensor:
        """The dataset rows of batch number `which`, or `which` itself when it is already an index tensor."""
        return self.batches[which] if isinstance(which, int) else which

    def ablated(self, which) -> engine.Record:
        """The ablated run of these rows (a batch's is kept when every batch's fits in `CACHE_BYTES`)."""
        if isinstance(which, int) and self._memo_batches and self._cache is None:
            if which not in self._batch_records:
                self._batch_records[which] = self._run_ablated(self.rows(which))
            return self._batch_records[which]
        index = self.rows(which)
        return self._cache.select(index) if self._cache is not None else self._run_ablated(index)

    def _run_ablated(self, index: torch.Tensor) -> engine.Record:
        d = self.data
        corrupted = d.corrupted_ids[index] if d.corrupted_ids is not None else None
        return engine.ablated_record(self.adapter, self.ablation, d.input_ids[index], d.attention_mask[index],
                                     corrupted, mean=self._mean)

    def _record_bytes(self, n_rows: int) -> int:
        a, t = self.adapter, self.data.input_ids.shape[1]
        per_row = t * (a.d_model * (len(a.embed_names) + 4 * a.n_layers + 2) + a.n_layers * a.n_heads * a.head_dim)
        return n_rows * per_row * 4

    def _whole_cache(self, batch_size: int) -> engine.Record | None:
        """Interchange: the corrupted runs never change, so keep the whole dataset's when they fit."""
        if self.ablation != "interchange" or self._record_bytes(len(self.data)) > CACHE_BYTES:
            return None
        return engine.Record.cat([self._run_ablated(index) for index in self.data.batches(batch_size)])

    @torch.no_grad()
    def _mean_record(self, batch_size: int) -> engine.Record:
        d = self.data
        batches = d.batches(batch_size)
        records = [engine.full_run(self.adapter, d.input_ids[i], d.attention_mask[i]) for i in batches]
        return engine.mean_record(records, [d.attention_mask[i] for i in batches])

    # ----- running ------------------------------------------------------------------------------------------
    def run(self, edge_mask: torch.Tensor, which, node_mask: torch.Tensor | None = None, checkpoint: bool = False,
            ablated: engine.Record | None = None) -> torch.Tensor:
        """Outputs (P, V) at the loss positions of these rows, every edge weighted by its mask (gradients flow
        through a mask that requires them). edge_mask: (num_edges,), or (B, num_edges) one per row."""
        index, d, device = self.rows(which), self.data, self.adapter.device
        return engine.masked_run(self.adapter, d.input_ids[index], self.ablated(which) if ablated is None else ablated,
                                 edge_mask.to(device),
                                 None if node_mask is None else node_mask.to(device), d.attention_mask[index],
                                 checkpoint=checkpoint, positions=d.loss_mask[index])

    @torch.no_grad()
    def _reference(self, used: torch.Tensor) -> None:
        """The full model's outputs at every loss position of the used rows: prepared (log-probabilities, or the
        scaled numbers) and decided."""
        d, total = self.data, int(self._offsets[-1])
        self._full = self._full_decision = None
        for index in d.batches(self.batch_size, used):
            out = engine.forward(self.adapter, d.input_ids[index], d.attention_mask[index], d.loss_mask[index])
            if self._full is None:
                self._full = torch.zeros(total, *out.shape[1:], device=out.device)
                self._full_decision = torch.zeros(total, dtype=torch.long, device=out.device)
            where = self._positions(index)
            self._full[where] = self.prepare(out)
            self._full_decision[where] = self.adapter.decide(out.float())

    def _positions(self, index: torch.Tensor) -> torch.Tensor:
        """Indices of these rows' loss positions in the example-major order of the whole dataset."""
        index = index.cpu()
        starts, counts = self._offsets[index], self._offsets[index + 1] - self._offsets[index]
        within = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        return (torch.repeat_interleave(starts, counts) + within).to(self.adapter.device)

    def row_of_position(self, which) -> torch.Tensor:
        """(P,) for each loss position of these rows, which of the rows (0..B-1) it belongs to."""
        counts = self.data.positions_per_row[self.rows(which)]
        return torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)

    def prepare(self, outputs: torch.Tensor) -> torch.Tensor:
        """Outputs as the loss compares them: log-probabilities of the scaled logits, or the scaled numbers."""
        scaled = outputs.float() * self.adapter.output_scale
        return scaled if self.numerical else torch.log_softmax(scaled, -1)

    def full(self, which) -> torch.Tensor:
        """The full model's prepared outputs (P, V) at these rows' loss positions."""
        return self._full[self._positions(self.rows(which))]

    # ----- metrics of some rows (sums over their loss positions) --------------------------------------------
    def loss_per_position(self, outputs: torch.Tensor, which) -> torch.Tensor:
        """(P,) KL(full || circuit) at each position, or the squared error for a numerical output."""
        circuit, full = self.prepare(outputs), self.full(which)
        if self.numerical:
            return squared_error_per_position(full, circuit)
        return kl_per_position(full, circuit)

    def loss_per_row(self, outputs: torch.Tensor, which) -> torch.Tensor:
        """(B,) each row's loss summed over its positions (the training objective weighs rows by these)."""
        per = self.loss_per_position(outputs, which)
        rows = self.row_of_position(which)
        return torch.zeros(len(self.rows(which)), dtype=per.dtype, device=per.device).index_add_(0, rows, per)

    def loss(self, outputs: torch.Tensor, which) -> torch.Tensor:
        return self.loss_per_position(outputs, which).sum()

    def logit_diff(self, outputs: torch.Tensor, which) -> torch.Tensor:
        out = outputs.float()
        direction = self._directions(which)
        if self.numerical:
            return (out * direction).sum()
        return logit_diff_per_position(out, direction[:, 0], direction[:, 1]).sum()

    def exact_match(self, outputs: torch.Tensor, which) -> torch.Tensor:
        decided = self.adapter.decide(outputs.float())
        return (decided == self._full_decision[self._positions(self.rows(which))]).sum().to(torch.float64)

    def accuracy(self, outputs: torch.Tensor, which) -> torch.Tensor:
        own = self._task_scores(outputs, which)
        if "accuracy" in own:
            return own["accuracy"]
        if self.data.target_ids is None:
            return self.exact_match(outputs, which)
        target = self.data.target_ids[self.rows(which)][self.row_of_position(which)]
        return (answer_choice(outputs.float(), self.data.answer_ids) == target).sum().to(torch.float64)

    def metric(self, name) -> BatchMetric:
        """A metric by name (`loss`, `logit_diff`, `accuracy`, `exact_match`, a task's own), or a callable."""
        if callable(name):
            return name
        if name in ("kl", "mse"):
            name = "loss"
        if name in ("loss", "logit_diff", "accuracy", "exact_match"):
            return getattr(self, name)
        if name in self.task_metrics:
            return lambda outputs, which: self._task_scores(outputs, which)[name]
        raise EpverifyError(f"unknown metric {name!r}: choose one of {', '.join(self.metric_names)} or pass a"
                            " callable (outputs, rows) -> sum over the rows' loss positions")

    @property
    def task_metrics(self) -> tuple[str, ...]:
        return tuple(getattr(self.task, "metric_names", ()))

    @property
    def metric_names(self) -> tuple[str, ...]:
        names = (*METRICS, "exact_match", *self.task_metrics)
        return tuple(dict.fromkeys(names))

    def _task_scores(self, outputs: torch.Tensor, which) -> dict[str, torch.Tensor]:
        if self.task is None or not self.task_metrics:
            return {}
        rows = self.rows(which)
        values = self.task.score(outputs.float(), self.data.select(rows), self.row_of_position(which))
        return {k: v.sum().to(torch.float64) for k, v in values.items()}

    # ----- whole-dataset evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, edge_mask: torch.Tensor, metrics=None, node_mask: torch.Tensor | None = None
                 ) -> dict[str, float]:
        """Dataset means of the metrics (default: all of `metric_names`) for one edge mask; the loss is reported
        as `kl` or `mse`."""
        fns = {name: self.metric(name) for name in (metrics or self.metric_names)}
        totals = dict.fromkeys(fns, 0.0)
        for batch in range(len(self)):
            outputs = self.run(edge_mask, batch, node_mask)
            for name, fn in fns.items():
                totals[name] += float(fn(outputs, batch))
        return {(self.loss_name if name == "loss" else name): total / self.n_positions
                for name, total in totals.items()}

    @torch.no_grad()
    def mean_loss(self, edge_mask: torch.Tensor, limit: float | None = None) -> float:
        """The faithfulness loss alone, mean per position (ACDC's inner loop, the redundancy pass). With `limit`, the
        batches stop once their sum alone puts the mean over it (every position's loss is at least 0), and what is
        returned is then a value over the limit, not the mean."""
        total = 0.0
        for batch in range(len(self)):
            total += float(self.loss(self.run(edge_mask, batch), batch))
            if limit is not None and total > limit * self.n_positions:
                break
        return total / self.n_positions

    # ----- helpers ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _directions(self, which) -> torch.Tensor:
        if self._direction is None:
            self._direction = self._all_directions()
        return self._direction[self._positions(self.rows(which))]

    def _all_directions(self) -> torch.Tensor:
        """Per loss position: (target, distractor) ids, or the signs (V,) of a numerical output's difference."""
        d = self.data
        width = None if self.numerical else 2
        out = torch.zeros(int(self._offsets[-1]), *((width,) if width else self._full.shape[1:]),
                          dtype=self._full.dtype if self.numerical else torch.long, device=self.adapter.device)
        empty_mask = torch.zeros(self.graph.num_edges, device=self.adapter.device)
        for batch in range(len(self)):
            index = self.rows(batch)
            where = self._positions(index)
            if d.target_ids is not None and not self.numerical:
                rows = index[self.row_of_position(batch)]
                out[where] = torch.stack([d.target_ids[rows], d.distractor_ids[rows]], 1)
                continue
            empty = self.run(empty_mask, batch).float()
            full = self._full[where]
            if self.numerical:
                out[where] = torch.sign(full / self.adapter.output_scale - empty)
                continue
            target = full.argmax(-1)
            rival = empty.scatter(1, target[:, None], float("-inf"))
            out[where] = torch.stack([target, rival.argmax(-1)], 1)
        return out


def evaluate(model, data: PruneData, edge_mask: torch.Tensor, ablation: str, batch_size: int = 256,
             node_mask: torch.Tensor | None = None) -> dict:
    """The faithfulness loss (`kl` or `mse`), `accuracy` and `exact_match` of one edge mask, as dataset means over
    the loss positions (`Evaluator.evaluate`)."""
    evaluator = Evaluator(model, data, ablation, batch_size)
    return evaluator.evaluate(edge_mask, ("loss", "accuracy", "exact_match"), node_mask)
