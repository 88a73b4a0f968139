"""Comparing circuits and rankings: with a ground truth (precision, recall, ROC and its AUC), with each other (IoU),
and across seeds (consensus, stability).

One definition for the edge cases, used by `recover`, the CI gate, the pytest plugin and the benchmarks: an empty
found set has precision 1 when the truth is empty too and 0 otherwise (an empty circuit never passes a precision
check by default); an empty truth is fully recalled; two empty sets have IoU 1; the AUC is undefined (None) when the
truth or its complement is empty.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

from ..core.graph import ComponentGraph
from ..io.circuit import Circuit


def _scores_of(result) -> torch.Tensor:
    return result.scores if hasattr(result, "scores") else torch.as_tensor(result)


def ranking(scores: torch.Tensor, tie_order: torch.Tensor | None = None) -> torch.Tensor:
    """Edge indices from the highest score to the lowest, ties in edge order (or, with `tie_order`, a position per
    edge, in the order of those positions: e.g. `io.eap_ig.mib_tie_order`, MIB's)."""
    scores = scores.detach().double().cpu()
    if tie_order is None:
        return torch.sort(scores, descending=True, stable=True).indices
    by_tie = torch.argsort(tie_order, stable=True)
    return by_tie[torch.sort(scores[by_tie], descending=True, stable=True).indices]


def top_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Binary mask of the k highest-scoring edges."""
    mask = torch.zeros(scores.shape[0])
    mask[ranking(scores)[: max(0, int(k))]] = 1.0
    return mask


def roc_auc(scores, truth: torch.Tensor) -> float | None:
    """Area under the ROC curve of `scores` (a tensor (num_edges,) or a MethodResult) ranking the edges in `truth`
    (bool) above the rest; None if one class is empty. Ties count one half (Mann-Whitney U)."""
    scores, truth = _scores_of(scores).detach().cpu(), truth.bool().cpu()
    pos, neg = scores[truth].double(), scores[~truth].double()
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


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


def precision_recall(found: Iterable, truth: Iterable) -> tuple[float, float]:
    """Precision and recall of a found edge set against a true one (the edge cases: module docstring)."""
    found, truth = _edge_set(found), _edge_set(truth)
    hits = len(found & truth)
    precision = hits / len(found) if found else float(not truth)
    return precision, (hits / len(truth) if truth else 1.0)


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
