"""Hard-concrete gates (Louizos, Welling & Kingma 2018): differentiable masks that can be exactly 0 or 1."""

from __future__ import annotations

import math

import torch

LEFT, RIGHT, BETA = -0.1, 1.1, 2.0 / 3.0  # stretch limits and temperature
INIT_MEAN, INIT_STD = 10.0, 0.01  # log-alpha initialisation: masks start (almost surely) at 1
EPS = 1e-6


def init_log_alpha(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fresh log-alphas, N(10, 0.01), as a float32 vector."""
    return torch.randn(n, generator=generator) * INIT_STD + INIT_MEAN


def sample(log_alpha: torch.Tensor, generator: torch.Generator | None = None, beta: float = BETA) -> torch.Tensor:
    """Training masks: a stretched, clamped concrete sample per gate (reparameterised, so differentiable)."""
    # drawn on the CPU generator, then moved: the same seed gives the same masks on every device
    u = torch.rand(log_alpha.shape, generator=generator).to(log_alpha.device).clamp(EPS, 1 - EPS)
    return from_noise(log_alpha, u, beta)


def from_noise(log_alpha: torch.Tensor, u: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """The gate for uniform noise u: clamp(sigmoid((logit u + log_alpha) / beta) (r - l) + l, 0, 1). A lower
    temperature beta puts more of the mass at exactly 0 and 1 (beta -> 0: a Bernoulli(sigmoid(log_alpha)) gate)."""
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)
    return (s * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)


def deterministic(log_alpha: torch.Tensor) -> torch.Tensor:
    """Evaluation masks: the stretched sigmoid of log-alpha, clamped to [0, 1]."""
    return (torch.sigmoid(log_alpha) * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)


def prob_nonzero(log_alpha: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """P(z > 0) per gate, the expected-L0 term: sigmoid(log_alpha - beta * log(-l / r))."""
    return torch.sigmoid(log_alpha - beta * math.log(-LEFT / RIGHT))


def keep(log_alpha: torch.Tensor) -> torch.Tensor:
    """The binary decision: the deterministic mask exceeds 1/2, which is exactly log_alpha > 0."""
    return log_alpha > 0


WARM_SCALE = 3.0  # |log-alpha| of the best- and worst-ranked edges in a warm start


def warm_log_alpha(scores: torch.Tensor, target_sparsity: float, scale: float = WARM_SCALE) -> torch.Tensor:
    """Initial log-alphas from attribution scores (higher = more important): each edge's rank quantile q in [0, 1]
    (0 the lowest score, 1 the highest; tied scores share their mean rank) is mapped piecewise linearly to
    [-scale, scale] with the target sparsity t at 0: scale * (q - t) / (1 - t) above t, scale * (q - t) / t below.
    So about the target's share of the edges starts shut (log-alpha < 0), the best edge at +scale, the worst at
    -scale: gates that are decided but not saturated, which the training can still move."""
    values = scores.detach().double().cpu()
    n = values.numel()
    _, group, counts = torch.unique(values, return_inverse=True, return_counts=True)  # groups in ascending order
    ends = torch.cumsum(counts, 0)
    rank = ((ends - counts + ends - 1).double() / 2)[group]  # 0-based rank, the mean over a group of ties
    q = rank / max(n - 1, 1)
    t = min(max(float(target_sparsity), 1e-6), 1 - 1e-6)
    out = torch.where(q >= t, scale * (q - t) / (1 - t), scale * (q - t) / t)
    return out.float()
