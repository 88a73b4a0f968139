"""The ground truth's elimination round (`epverify.tracr.ground_truth._least_change`).

Invariant: whatever the deviations, and whatever the previous round's hints, the removal chosen is the one a
plain scan in `kept` order chooses: the least deviation within the tolerance, ties to the earliest edge; a run
stopped at its limit never decides the choice.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from epverify.tracr.ground_truth import BREAKS, _least_change


class StandIn:
    """A verifier whose deviations are given. A run whose deviation exceeds its limit returns the least lower bound
    the real one could (it stops at the first chunk past the limit, returning what it has seen so far)."""

    def __init__(self, values: dict, tolerance: float):
        self.values, self.tolerance = values, tolerance

    def deviation(self, edges, limit=None):
        (removed,) = set(self.values) - set(edges)
        value = self.values[removed]
        return math.nextafter(limit, math.inf) if limit is not None and value > limit else value


def plain_scan(values: dict, kept: list, tolerance: float):
    best = None
    for edge in kept:
        if values[edge] <= tolerance and (best is None or values[edge] < best[1]):
            best = (edge, values[edge])
    return best


deviation = st.sampled_from([0.0, 0.0, 1e-4, 0.01, 0.01, 0.03, 0.05, 0.06, 0.3, BREAKS])


@settings(max_examples=200)
@given(st.lists(deviation, min_size=1, max_size=12), st.lists(deviation, max_size=12), st.sampled_from([1e-3, 0.05]))
def test_the_choice_is_the_plain_scans(devs, hints, tolerance):
    kept = [f"e{i}" for i in range(len(devs))]
    values = dict(zip(kept, devs))
    last = dict(zip(kept, hints))
    assert _least_change(StandIn(values, tolerance), list(kept), last) == plain_scan(values, kept, tolerance)
