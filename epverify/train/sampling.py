"""Which rows a step trains on, and the weights that turn their summed losses into the faithfulness estimate."""

from __future__ import annotations

import torch

from ..eval.evaluator import Evaluator
from .config import PruneConfig

FOCUS_TOLERANCE = 1e-6  # an example whose empty-circuit loss per position is below this counts as reproduced


class ExampleSampler:
    """Batches of dataset rows and their weights (CPU tensors: the generator is the CPU's, on every device).

    Uniform (example_focus 1): shuffled passes over the data; an example's weight is 1 / (positions in the batch).
    Focused (example_focus < 1): rows are drawn with replacement, those whose output the empty circuit (every edge
    ablated) already reproduces `example_focus` times as often as the others; weights 1 / (B q_i P) (q_i the
    probability of row i, P all loss positions) keep the estimate unbiased. Under interchange ablation many rows
    have a corrupted partner with the same output: they carry no signal, and focusing spends the batch elsewhere.
    """

    def __init__(self, evaluator: Evaluator, config: PruneConfig, gen: torch.Generator):
        data = evaluator.data
        self.n, self.gen, self.batch = len(data), gen, config.batch_size
        self.positions = data.positions_per_row.to(torch.float32).cpu()
        self.probs = None
        if config.example_focus < 1.0:
            sensitive = _empty_circuit_loss(evaluator, config.batch_size) > FOCUS_TOLERANCE * self.positions
            weights = torch.where(sensitive, 1.0, config.example_focus)
            self.probs = weights / weights.sum()
            self.focused = float(sensitive.float().mean())
        self.order, self.position = torch.randperm(self.n, generator=gen), 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch's rows (B,) and weights (B,)."""
        if self.probs is not None:
            index = torch.multinomial(self.probs, self.batch, replacement=True, generator=self.gen)
            return index, 1.0 / (self.batch * self.probs[index] * self.positions.sum())
        if self.position + min(self.batch, self.n) > self.n:
            self.order, self.position = torch.randperm(self.n, generator=self.gen), 0
        index = self.order[self.position : self.position + self.batch]
        self.position += len(index)
        return index, torch.full((len(index),), 1.0) / self.positions[index].sum()

    def state_dict(self) -> dict:
        return {"order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.order, self.position = state["order"].clone(), state["position"]


@torch.no_grad()
def _empty_circuit_loss(evaluator: Evaluator, batch_size: int) -> torch.Tensor:
    """(N,) every row's loss with every edge ablated, summed over its positions."""
    empty = torch.zeros(evaluator.graph.num_edges, device=evaluator.adapter.device)
    losses = [evaluator.loss_per_row(evaluator.run(empty, index), index)
              for index in evaluator.data.batches(batch_size)]
    return torch.cat(losses).cpu()
