"""Faithfulness of any edge set: KL (or squared error), and agreement of decisions with the full model."""

from __future__ import annotations

import torch

from . import engine
from .adapters.base import Adapter
from .trainer import AblationSource, Faithfulness, PruneData


@torch.no_grad()
def evaluate(adapter: Adapter, data: PruneData, edge_mask: torch.Tensor, ablation: str,
             batch_size: int = 256, node_mask: torch.Tensor | None = None) -> dict:
    """Mean faithfulness loss, accuracy (fraction of loss positions whose decision, `adapter.decide`, matches
    the full model's) and exact match (accuracy == 1)."""
    loss_fn = Faithfulness(adapter, data, batch_size)
    ablated_for = AblationSource(adapter, data, ablation, batch_size)
    total_loss, total_pos, matches = 0.0, 0, 0
    for start in range(0, len(data), batch_size):
        index = torch.arange(start, min(start + batch_size, len(data)))
        logits = engine.masked_run(adapter, data.input_ids[index], ablated_for(index), edge_mask.to(adapter.dtype),
                                   node_mask, data.attention_mask[index])
        n_pos = int(data.loss_mask[index].sum())
        total_loss += loss_fn(logits, index).item() * n_pos
        full = engine.forward(adapter, data.input_ids[index], data.attention_mask[index])
        where = data.loss_mask[index]
        matches += int((adapter.decide(logits[where]) == adapter.decide(full[where])).sum())
        total_pos += n_pos
    accuracy = matches / total_pos
    name = "kl" if adapter.output_kind == "distribution" else "mse"
    return {name: total_loss / total_pos, "accuracy": accuracy, "exact_match": accuracy == 1.0}


def roc_auc(scores: torch.Tensor, truth: torch.Tensor) -> float | None:
    """Area under the ROC curve of `scores` ranking the edges in `truth` (bool) above the rest; None if one
    class is empty. Ties count one half (Mann-Whitney U)."""
    truth = truth.bool()
    pos, neg = scores[truth].double(), scores[~truth].double()
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))
