"""The warm start's mapping from attribution scores to initial log-alphas (`hard_concrete.warm_log_alpha`).

- Order: an edge with a higher score never starts with a lower log-alpha; tied scores start equal.
- Share: the edges that start shut (log-alpha < 0) are the target's share of the edges, to within the ties.
- Range: every log-alpha lies in [-scale, scale], the best edge at +scale and the worst at -scale.
"""

import torch
from hypothesis import given
from hypothesis import strategies as st

from epverify.core.hard_concrete import WARM_SCALE, warm_log_alpha


@st.composite
def scores(draw):
    n = draw(st.integers(2, 300))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    values = torch.rand(n, generator=gen, dtype=torch.float64)
    levels = draw(st.sampled_from([0, 3, 20]))  # 0: all distinct; else rounded to a few levels, many ties
    return (values * levels).floor() / levels if levels else values


@given(scores(), st.floats(0.05, 0.99))
def test_warm_start_keeps_the_order_the_share_and_the_range(values, target):
    alpha = warm_log_alpha(values, target).double()
    order = torch.argsort(values)
    assert (torch.diff(alpha[order]) >= -1e-6).all()  # monotone in the score
    for value in torch.unique(values):
        tied = alpha[values == value]
        assert torch.allclose(tied, tied[0].expand_as(tied))
    assert alpha.min() >= -WARM_SCALE - 1e-6 and alpha.max() <= WARM_SCALE + 1e-6
    if len(torch.unique(values)) == len(values):  # no ties: exact share and both ends
        shut = (alpha < 0).double().mean().item()
        assert abs(shut - target) <= 1 / len(values) + 1e-9
        assert alpha[order[-1]] == WARM_SCALE and alpha[order[0]] == -WARM_SCALE
