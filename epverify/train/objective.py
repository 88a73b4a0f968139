"""The sparsity side of the objective: lambda1 (s - t) + lambda2 (s - t)^2 (docs/design.md, "The method").

s is the expected edge sparsity under the gates, t the target, ramping linearly from 0 to the final target over the
warm-up; the lambdas are trained by gradient ascent. The faithfulness side comes from the estimator
(`epverify.train.estimators`), measured by the evaluator (`epverify.eval.Evaluator`).
"""

from __future__ import annotations

import torch

from ..core import hard_concrete
from ..core.graph import ComponentGraph
from .config import PruneConfig


def expected_sparsity(edge_log_alpha: torch.Tensor, node_log_alpha: torch.Tensor | None, edge_writer,
                      beta: float = hard_concrete.BETA) -> torch.Tensor:
    """1 - mean over edges of P(z_e != 0); with node masks, an edge's keep probability times its writer's."""
    keep = hard_concrete.prob_nonzero(edge_log_alpha, beta)
    if node_log_alpha is not None:
        keep = keep * hard_concrete.prob_nonzero(node_log_alpha, beta)[edge_writer]
    return 1.0 - keep.mean()


class SparsityTerm:
    """The Lagrangian term and its multipliers (`lambdas`, float32 on the masks' device)."""

    def __init__(self, config: PruneConfig, graph: ComponentGraph, device: torch.device):
        self.config, self.num_edges = config, graph.num_edges
        self.lambdas = torch.zeros(2, device=device, requires_grad=True)
        self.edge_writer = torch.tensor(graph.edge_writer, device=device)

    def target(self, step: int) -> float:
        """The sparsity target at (0-based) step `step`: the ramp over the warm-up, then the final target."""
        c = self.config
        return c.target_sparsity * min(1.0, (step + 1) / max(1, c.warmup_steps))

    def __call__(self, edge_log_alpha, node_log_alpha, step: int):
        """(term, expected sparsity s, target t, gap s - t) at this step."""
        sparsity = expected_sparsity(edge_log_alpha, node_log_alpha, self.edge_writer, self.config.gate_temperature)
        target = self.target(step)
        gap = sparsity - target
        if self.config.sparsity_constraint == "at_least":
            gap = gap.clamp(max=0.0)
        return self.lambdas[0] * gap + self.lambdas[1] * gap**2, sparsity, target, gap

    @torch.no_grad()
    def cap(self, gap: torch.Tensor) -> None:
        """After an ascent step: scale the lambdas down so that the term's slope |lambda1 + 2 lambda2 gap| is at most
        `max_edge_price` per edge (no ceiling when it is 0)."""
        ceiling = self.config.max_edge_price * self.num_edges
        if ceiling <= 0:
            return
        slope = abs(float(self.lambdas[0]) + 2 * float(self.lambdas[1]) * gap.item())
        if slope > ceiling:
            self.lambdas.mul_(ceiling / slope)
