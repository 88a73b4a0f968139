"""Evaluating any method's ranking or circuit: faithfulness curves with MIB's CPR and CMD, ROC against a
ground truth, IoU between circuits, and multi-seed consensus.

Faithfulness curve. Edges are kept in score order (ties in edge order); at each fraction x of the edges the
top floor(x * num_edges) edges form the circuit C_x and every metric of `epverify.eval.evaluator` is measured. MIB's
normalised faithfulness of a metric m is

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty))

(0 for the empty circuit, 1 for the full model; for the KL loss, m(full) = 0, so f = 1 - KL(C) / KL(empty)).
Following MIB (Mueller et al. 2025, "MIB: A Mechanistic Interpretability Benchmark"), over the grid of edge
fractions `MIB_GRID` = 0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%, 100%:

- CPR, the circuit performance ratio: the area under f(C_x) (trapezoid rule over x; higher is better);
- CMD, the circuit-model distance: the area between f(C_x) and 1, i.e. of |1 - f(C_x)| (lower is better).

MIB takes m = the task's logit difference for both; here any metric can be chosen (`logit_diff` by default).
When m(full) = m(empty) the normalisation is undefined and f is reported as 0, as MIB does.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from ..core.graph import ComponentGraph
from ..io.circuit import Circuit
from .evaluate import roc_auc
from .evaluator import METRICS, MaskEvaluator

MIB_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def ranking(scores: torch.Tensor) -> torch.Tensor:
    """Edge indices from the highest score to the lowest, ties in edge order."""
    return torch.sort(scores.detach().double().cpu(), descending=True, stable=True).indices


def top_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Binary mask of the k highest-scoring edges."""
    mask = torch.zeros(scores.shape[0])
    mask[ranking(scores)[: max(0, int(k))]] = 1.0
    return mask


def _scores_of(result) -> torch.Tensor:
    return result.scores if hasattr(result, "scores") else torch.as_tensor(result)


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


def faithfulness_curve(evaluator: MaskEvaluator, scores, fractions: Sequence[float] = MIB_GRID,
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
    order = ranking(scores)
    values: dict[str, list[float]] = {}
    for k in counts:
        mask = torch.zeros(n)
        mask[order[:k]] = 1.0
        for name, value in evaluator.evaluate(mask, metrics).items():
            values.setdefault(name, []).append(value)
    full = evaluator.evaluate(torch.ones(n), metrics)
    empty = evaluator.evaluate(torch.zeros(n), metrics)
    return FaithfulnessCurve(list(fractions), list(counts), values, full, empty, evaluator.loss_name)


# ----- comparing with a ground truth -----------------------------------------------------------------------
def truth_mask(graph: ComponentGraph, edges: Iterable) -> torch.Tensor:
    """Bool mask (num_edges,) of a set of [writer, reader] edges."""
    mask = torch.zeros(graph.num_edges, dtype=torch.bool)
    pairs = [tuple(e) for e in edges]
    if pairs:
        mask[graph.index_of(pairs)] = True
    return mask


def roc_curve(scores, truth: torch.Tensor) -> tuple[list[float], list[float]]:
    """ROC points (false positive rates, true positive rates) of ranking the `truth` edges first: one point
    per distinct score (thresholds from high to low), from (0, 0) to (1, 1)."""
    scores = _scores_of(scores).detach().double().cpu()
    truth = truth.bool().cpu()
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    fpr, tpr = [0.0], [0.0]
    if n_pos == 0 or n_neg == 0:
        return [0.0, 1.0], [0.0, 1.0]
    order = ranking(scores)
    s, t = scores[order], truth[order]
    tp = fp = 0
    for i in range(len(s)):
        tp += int(t[i])
        fp += int(not t[i])
        if i == len(s) - 1 or s[i + 1] != s[i]:
            fpr.append(fp / n_neg)
            tpr.append(tp / n_pos)
    return fpr, tpr


def auc(scores, truth: torch.Tensor) -> float | None:
    """Area under the ROC curve (`evaluate.roc_auc`: ties count one half); None when a class is empty."""
    return roc_auc(_scores_of(scores).detach().cpu(), truth.cpu())


def precision_recall(found: Iterable, truth: Iterable) -> tuple[float, float]:
    """Precision and recall of a found edge set against a true one (1.0 for an empty found or true set)."""
    found, truth = _edge_set(found), _edge_set(truth)
    hits = len(found & truth)
    return (hits / len(found) if found else 1.0), (hits / len(truth) if truth else 1.0)


# ----- comparing circuits ----------------------------------------------------------------------------------
def _edge_set(edges) -> set[tuple[str, str]]:
    if isinstance(edges, Circuit):
        edges = edges.edges
    return {(str(w), str(r)) for w, r in edges}


def iou(a, b) -> float:
    """Intersection over union of two edge sets (Circuits or [writer, reader] lists); 1.0 if both empty."""
    a, b = _edge_set(a), _edge_set(b)
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def consensus(circuits: Sequence[Circuit], min_count: int) -> Circuit:
    """The edges kept by at least `min_count` of the circuits (e.g. found with different seeds)."""
    if not circuits:
        raise ValueError("consensus needs at least one circuit")
    if not 1 <= min_count <= len(circuits):
        raise ValueError(f"min_count must be between 1 and {len(circuits)}, got {min_count}")
    counts = Counter(e for c in circuits for e in _edge_set(c))
    first = circuits[0]
    kept = sorted(e for e, n in counts.items() if n >= min_count)
    return Circuit(kept, first.total_edges, model=first.model, ablation=first.ablation,
                   metrics={"consensus": f"{min_count} of {len(circuits)}",
                            "support": {f"{w} -> {r}": counts[(w, r)] for w, r in kept}})


def seed_stability(circuits: Sequence[Circuit]) -> dict:
    """Pairwise IoU statistics of circuits found with different seeds: mean, min, and every pair's value."""
    pairs = [iou(a, b) for a, b in itertools.combinations(circuits, 2)]
    if not pairs:
        return {"n": len(circuits), "mean_iou": 1.0, "min_iou": 1.0, "pairs": []}
    return {"n": len(circuits), "mean_iou": sum(pairs) / len(pairs), "min_iou": min(pairs), "pairs": pairs}
