"""Inputs shared by the engine, faithfulness and regression properties: a model, a padded batch, an ablation.

Two sources: random Tracr-shaped models (`epverify.testing.strategies.tracr_shapes`, float64 weights, random inputs
with right padding) and shipped zoo programs (float32, rows of their own dataset, padded to the longest row).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from hypothesis import strategies as st

from epverify.adapters.tracr import TracrAdapter
from epverify.core import engine
from epverify.testing import strategies as eps
from epverify.tracr import load, names
from epverify.tracr.data import dataset

# Zoo programs the properties use; shuffle_dyck2 (2,102 edges) makes the oracle slow and adds no new shape.
ZOO = tuple(n for n in names() if n != "shuffle_dyck2")


@dataclass
class Case:
    """A model, a batch (ids, corrupted ids, attention mask: (B, T)) and the comparison tolerance."""

    name: str
    adapter: TracrAdapter
    ids: torch.Tensor
    corrupted: torch.Tensor
    mask: torch.Tensor
    atol: float

    def __repr__(self) -> str:  # what a failing example prints
        lengths = self.mask.sum(1).tolist()
        return f"Case({self.name}, batch={tuple(self.ids.shape)}, lengths={lengths})"

    @property
    def graph(self):
        return self.adapter.graph

    def mean_reference(self) -> engine.Record:
        """The mean-ablation reference: per-position means over this batch."""
        return engine.mean_record([engine.full_run(self.adapter, self.ids, self.mask)], [self.mask])

    def ablated(self, ablation: str, rows: torch.Tensor | None = None, mean: engine.Record | None = None):
        """The ablated Record for `ablation` on the batch, or on `rows` of it (trimmed to their longest)."""
        ids, corrupted, mask = self.rows(rows)
        if ablation == "mean" and mean is None:
            mean = self.mean_reference()
        return engine.ablated_record(self.adapter, ablation, ids, mask, corrupted, mean=mean)

    def rows(self, rows: torch.Tensor | None):
        if rows is None:
            return self.ids, self.corrupted, self.mask
        seq = int(self.mask[rows].sum(1).max())
        return self.ids[rows, :seq], self.corrupted[rows, :seq], self.mask[rows, :seq]

    def real(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Bool (B, T): the real (not padded) positions."""
        return self.rows(rows)[2].bool()


@st.composite
def random_cases(draw, max_layers: int = 3, ragged: bool = False) -> Case:
    """A random Tracr-shaped model (float64) and a random right-padded batch (always padded when ragged)."""
    shape = draw(eps.tracr_shapes(max_layers=max_layers))
    ids, corrupted, mask = draw(eps.token_batches(shape.vocab_size, shape.max_seq_len + 1, ragged=ragged))
    return Case(f"random {shape}", TracrAdapter(shape.build()), ids, corrupted, mask, atol=1e-9)


@cache
def _zoo(name: str):
    model = load(name)
    clean, corrupted = dataset(model.dataset)
    return model, clean, corrupted


@st.composite
def zoo_cases(draw, programs: tuple[str, ...] = ZOO, ragged: bool = False) -> Case:
    """A shipped program and 1-6 rows of its dataset (with their corrupted partners), padded to the longest;
    when ragged, the first row is longer than the last."""
    name = draw(st.sampled_from(programs))
    model, clean, corrupted = _zoo(name)
    rows = draw(st.lists(st.integers(0, len(clean) - 1), min_size=1, max_size=6))
    if ragged:
        longest = max(len(s) for s in clean)
        long_rows = [i for i, s in enumerate(clean) if len(s) == longest]
        short_rows = [i for i, s in enumerate(clean) if len(s) < longest]
        rows = [draw(st.sampled_from(long_rows)), *rows, draw(st.sampled_from(short_rows))]
    ids, mask = model.encode([clean[i] for i in rows])
    corrupted_ids, _ = model.encode([corrupted[i] for i in rows])
    return Case(name, TracrAdapter(model), ids, corrupted_ids, mask, atol=1e-5)


def cases(ragged: bool = False) -> st.SearchStrategy:
    """Random-model cases or zoo cases (`ragged`: every batch has padding)."""
    return st.one_of(random_cases(ragged=ragged), zoo_cases(ragged=ragged))


def assert_close_at_real_positions(actual: torch.Tensor, expected: torch.Tensor, real: torch.Tensor,
                                   atol: float) -> None:
    """Equal at every real position, to `atol` plus a relative 1e-6 (random models' outputs can be large)."""
    torch.testing.assert_close(actual[real], expected[real], atol=atol, rtol=1e-6)
