"""Hard-concrete gates (epverify/hard_concrete.py): range, determinism, monotone sparsity, the sampled distribution.

The sampled mask z = clamp(sigmoid((logit(u) + log_alpha) / beta) (r - l) + l, 0, 1), u ~ U(0, 1), is a
monotone function of u, so its law follows from the logistic CDF. For t in (0, 1):

    P(z > t) = sigmoid(log_alpha - beta * logit((t - l) / (r - l)))

hence P(z > 0) = sigmoid(log_alpha - beta * log(-l / r)) (what `hard_concrete.prob_nonzero` returns) and
E[z] = integral over t in (0, 1) of P(z > t) dt, a smooth integrand that a fine midpoint rule in float64
computes to ~1e-10. (The sampler clamps u to [1e-6, 1 - 1e-6]; that moves probability mass 2e-6, far below the
tolerances.)
"""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from epverify.core import hard_concrete

log_alphas = st.lists(st.floats(-30, 30, allow_nan=False), min_size=1, max_size=64).map(torch.tensor)


def survival(log_alpha: float, t: torch.Tensor, beta: float = hard_concrete.BETA) -> torch.Tensor:
    """P(z > t) for t in [0, 1), from the logistic CDF."""
    s = (t - hard_concrete.LEFT) / (hard_concrete.RIGHT - hard_concrete.LEFT)
    return torch.sigmoid(log_alpha - beta * torch.log(s / (1 - s)))


def closed_form_mean(log_alpha: float, beta: float = hard_concrete.BETA, points: int = 200_000) -> float:
    """E[z] for one gate, by integrating P(z > t) over t in (0, 1) (midpoint rule, float64)."""
    t = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    return float(survival(log_alpha, t, beta).mean())


@given(log_alphas, st.integers(0, 2**31 - 1))
def test_masks_lie_in_the_unit_interval(log_alpha, seed):
    """Sampled and deterministic masks lie in [0, 1] for any finite log-alpha."""
    z = hard_concrete.sample(log_alpha, torch.Generator().manual_seed(seed))
    d = hard_concrete.deterministic(log_alpha)
    assert torch.all((z >= 0) & (z <= 1)) and torch.all((d >= 0) & (d <= 1))


@given(log_alphas, st.integers(0, 2**31 - 1))
def test_deterministic_masks_are_a_function_of_log_alpha_alone(log_alpha, seed):
    """The deterministic mask of a gate depends on its own log-alpha only, not on random state or the others
    (to float rounding: vectorised and scalar sigmoids may differ in the last bit), and the keep decision is
    exactly log_alpha > 0, the same as the mask exceeding 1/2 wherever rounding cannot decide it."""
    torch.manual_seed(seed)
    first = hard_concrete.deterministic(log_alpha)
    torch.rand(7)  # move the global random state
    assert torch.equal(first, hard_concrete.deterministic(log_alpha.clone()))
    one_by_one = torch.stack([hard_concrete.deterministic(x[None])[0] for x in log_alpha])
    torch.testing.assert_close(first, one_by_one, atol=1e-6, rtol=0)
    assert torch.equal(hard_concrete.keep(log_alpha), log_alpha > 0)
    clear = log_alpha.abs() > 1e-4
    assert torch.equal(hard_concrete.keep(log_alpha)[clear], (first > 0.5)[clear])


@given(log_alphas, st.floats(-20, 20), st.floats(0, 20))
def test_expected_sparsity_is_monotone_in_a_shift_of_log_alpha(log_alpha, shift, extra):
    """Raising every log-alpha never raises the expected sparsity 1 - mean P(z > 0)."""
    log_alpha = log_alpha.double()

    def sparsity(c: float) -> float:
        return float(1 - hard_concrete.prob_nonzero(log_alpha + c).mean())

    assert sparsity(shift + extra) <= sparsity(shift)


@given(st.floats(-6, 6), st.integers(0, 2**31 - 1), st.sampled_from([hard_concrete.BETA, 0.1, 0.3, 1.5]))
def test_sampled_masks_follow_the_closed_form(log_alpha, seed, beta):
    """At any temperature, over many samples, the fraction of non-zero masks matches prob_nonzero (itself
    P(z > 0) of the closed form) and the mean matches E[z], within six standard errors (a false alarm: probability
    ~2e-9 a check)."""
    n = 400_000
    gen = torch.Generator().manual_seed(seed)
    z = hard_concrete.sample(torch.full((n,), log_alpha, dtype=torch.float64), gen, beta)

    p = float(hard_concrete.prob_nonzero(torch.tensor(log_alpha, dtype=torch.float64), beta))
    assert math.isclose(p, float(survival(log_alpha, torch.tensor(0.0, dtype=torch.float64), beta)), rel_tol=1e-9)
    p_hat = float((z > 0).double().mean())
    assert abs(p_hat - p) <= 6 * math.sqrt(p * (1 - p) / n) + 1e-5

    mean = closed_form_mean(log_alpha, beta)
    std_error = float(z.std()) / math.sqrt(n)
    assert abs(float(z.mean()) - mean) <= 6 * std_error + 1e-5
