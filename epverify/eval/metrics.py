"""The formulas of the metrics, per loss position, on outputs already taken at the loss positions (P, V).

The `Evaluator` applies them to a circuit's outputs against the full model's; tasks add their own (`Task.score`).
"""

from __future__ import annotations

import torch


def kl_per_position(full_logp: torch.Tensor, circuit_logp: torch.Tensor) -> torch.Tensor:
    """(P,) KL(p_full || p_circuit) from log-probabilities (P, V)."""
    return (full_logp.exp() * (full_logp - circuit_logp)).sum(-1)


def squared_error_per_position(full: torch.Tensor, circuit: torch.Tensor) -> torch.Tensor:
    """(P,) the squared error of a numerical output (P, 1)."""
    return ((circuit - full) ** 2).sum(-1)


def logit_diff_per_position(outputs: torch.Tensor, target: torch.Tensor, distractor: torch.Tensor) -> torch.Tensor:
    """(P,) logit of the target minus logit of the distractor, ids (P,)."""
    return outputs.gather(1, target[:, None])[:, 0] - outputs.gather(1, distractor[:, None])[:, 0]


def answer_choice(outputs: torch.Tensor, answer_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(P,) the argmax token, among `answer_ids` when given."""
    if answer_ids is None:
        return outputs.argmax(-1)
    return answer_ids[outputs[:, answer_ids].argmax(-1)]
