"""What every circuit-finding method returns, and how a ranking becomes a circuit."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.graph import ComponentGraph
from ..eval.compare import ranking, top_mask
from ..io.circuit import Circuit


@dataclass
class MethodResult:
    """Edge scores (num_edges,) in edge order, higher = more important, and the method's own circuit if it
    decides one (ACDC, Edge Pruning); score-only methods (EAP, EAP-IG) leave `circuit` None: take `top(k)`.

    `info` holds method details (e.g. EAP's signed scores, ACDC's trial count); `seconds` is the wall time.
    """

    method: str
    scores: torch.Tensor
    graph: ComponentGraph
    ablation: str
    circuit: Circuit | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def ranking(self) -> torch.Tensor:
        """Edge indices from most to least important; ties keep edge order (stable sort)."""
        return ranking(self.scores)

    def top_mask(self, k: int) -> torch.Tensor:
        """Binary mask (num_edges,) of the k highest-scoring edges."""
        return top_mask(self.scores, k)

    def top(self, k: int) -> Circuit:
        """The k highest-scoring edges as a circuit (no dangling-edge pruning: exactly k edges)."""
        return circuit_from_mask(self.graph, self.top_mask(k), self.ablation, method=self.method)


def circuit_from_mask(graph: ComponentGraph, mask: torch.Tensor, ablation: str, **metrics) -> Circuit:
    """A binary edge mask as a Circuit, edges in edge order."""
    kept = torch.nonzero(mask > 0.5).flatten().tolist()
    return Circuit([graph.edges[i] for i in kept], graph.num_edges, model=graph.summary(), ablation=ablation,
                   metrics=dict(metrics))
