"""Faithfulness curves of any ranking of the edges, with MIB's CPR and CMD.

Edges are kept in score order, ties in the order of EAP-IG's graph (so that MIB, ranking the exported scores,
keeps the same edges: `io.eap_ig.mib_tie_order`); at each fraction x of the edges the top floor(x * num_edges)
edges form the circuit C_x and the metrics of an `Evaluator` are measured. MIB's
normalised faithfulness of a metric m is

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty))

(0 for the empty circuit, 1 for the full model; for the KL loss, m(full) = 0, so f = 1 - KL(C) / KL(empty)).
Following MIB (Mueller et al. 2025, "MIB: A Mechanistic Interpretability Benchmark"), over the grid of edge
fractions `MIB_GRID` = 0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%, 100%:

- CPR, the circuit performance ratio: the area under f(C_x) (trapezoid rule over x; higher is better);
- CMD, the circuit-model distance: the area between f(C_x) and 1, i.e. of |1 - f(C_x)| (lower is better).

MIB takes m = the task's logit difference for both; here any metric can be chosen (`logit_diff` by default).
When m(full) = m(empty) the normalisation is undefined: MIB's code divides by zero there (hannamw/MIB-circuit-track
at bfcce7b, `evaluate_area_under_curve`), epverify reports f = 0. MIB ranks edges by |score|; epverify's curves
rank by score, the same for the non-negative scores it exports (tests/test_mib_conformance.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..io.eap_ig import mib_tie_order
from .compare import _scores_of, ranking
from .evaluator import METRICS, Evaluator

MIB_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class FaithfulnessCurve:
    """Metrics of the top-k circuits of one ranking, with the full model's and the empty circuit's values."""

    fractions: list[float]
    counts: list[int]
    values: dict[str, list[float]]  # metric -> one value per count
    full: dict[str, float]
    empty: dict[str, float]
    loss_name: str = "kl"
    extra: dict = field(default_factory=dict)

    def normalized(self, metric: str = "logit_diff") -> list[float]:
        """f(C_k) for every point: (m(C) - m(empty)) / (m(full) - m(empty)); 0 where undefined."""
        metric = self.loss_name if metric == "loss" else metric
        span = self.full[metric] - self.empty[metric]
        if span == 0 or not math.isfinite(span):
            return [0.0 for _ in self.counts]
        return [(v - self.empty[metric]) / span for v in self.values[metric]]

    def cpr(self, metric: str = "logit_diff") -> float:
        """Area under the normalised faithfulness curve over the edge fractions (MIB's CPR)."""
        return trapezoid(self.fractions, self.normalized(metric))

    def cmd(self, metric: str = "logit_diff") -> float:
        """Area between the normalised faithfulness curve and 1 (MIB's CMD)."""
        return trapezoid(self.fractions, [abs(1.0 - f) for f in self.normalized(metric)])

    def to_dict(self) -> dict:
        out = {"fractions": self.fractions, "counts": self.counts, "values": self.values, "full": self.full,
               "empty": self.empty}
        for metric in self.values:
            if metric != "accuracy":
                out[f"cpr_{metric}"] = self.cpr(metric)
                out[f"cmd_{metric}"] = self.cmd(metric)
        return out


def trapezoid(x: Sequence[float], y: Sequence[float]) -> float:
    """Trapezoid-rule area under y(x) (x increasing)."""
    return float(sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1)))


def faithfulness_curve(evaluator: Evaluator, scores, fractions: Sequence[float] = MIB_GRID,
                       counts: Sequence[int] | None = None, metrics=METRICS) -> FaithfulnessCurve:
    """The metrics of the top-k edges of `scores` (a tensor or a MethodResult) at each fraction of the edges
    (k = floor(fraction * num_edges), MIB's rule), or at explicit edge `counts`."""
    scores = _scores_of(scores)
    n = evaluator.graph.num_edges
    if counts is None:
        counts = [int(math.floor(f * n + 1e-9)) for f in fractions]
        fractions = list(fractions)
    else:
        counts = list(counts)
        fractions = [c / n for c in counts]
    order = ranking(scores, mib_tie_order(evaluator.graph))  # ties as MIB breaks them
    values: dict[str, list[float]] = {}
    for k in counts:
        mask = torch.zeros(n)
        mask[order[:k]] = 1.0
        for name, value in evaluator.evaluate(mask, metrics).items():
            values.setdefault(name, []).append(value)
    full = evaluator.evaluate(torch.ones(n), metrics)
    empty = evaluator.evaluate(torch.zeros(n), metrics)
    return FaithfulnessCurve(list(fractions), list(counts), values, full, empty, evaluator.loss_name)
