"""Equivalence of every registered Hugging Face family with the Hugging Face model itself.

For random tiny configs of each family in the registry (`epverify.adapters.registry`; sizes, norms, windows,
soft-capping and rotary settings drawn by `epverify.testing.strategies.hf_configs`, every weight moved off its
initial value), random inputs and random right padding:
- the engine keeping every edge reproduces the model's own logits at every real position (fp32, atol 1e-4);
- the engine keeping no edge under interchange ablation reproduces the model's logits on the corrupted input;
- the plain engine forward reproduces the model's logits.
A family added to the registry is tested here without further code: one that is not exact fails the suite.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epverify.adapters import wrap
from epverify.adapters.registry import families
from epverify.core import engine
from epverify.testing import strategies as eps

ATOL = 1e-4
EXAMPLES = settings(max_examples=8, deadline=None, derandomize=True)
FAMILIES = tuple(families())


def case(family: str):
    return st.tuples(eps.hf_configs(family), st.integers(0, 1000)).flatmap(
        lambda cs: st.tuples(st.just(cs[0]), st.just(cs[1]),
                             eps.token_batches(cs[0].vocab_size, 8, max_batch=3)))


def hf_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("family", FAMILIES)
@EXAMPLES
@given(data=st.data())
def test_masked_run_with_every_edge_or_none_equals_hf(family, data):
    """Every edge kept: the clean model's logits; no edge kept (interchange): the corrupted model's logits."""
    config, seed, (ids, corrupted, mask) = data.draw(case(family))
    model = eps.build_model(config, seed)
    adapter = wrap(model).adapter
    with torch.no_grad():
        ablated = engine.ablated_record(adapter, "interchange", ids, mask, corrupted_ids=corrupted)
        every = engine.masked_run(adapter, ids, ablated, torch.ones(adapter.graph.num_edges), attention_mask=mask)
        none = engine.masked_run(adapter, ids, ablated, torch.zeros(adapter.graph.num_edges), attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(every[real], hf_logits(model, ids, mask)[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(none[real], hf_logits(model, corrupted, mask)[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@EXAMPLES
@given(data=st.data())
def test_forward_equals_hf(family, data):
    """The plain engine forward through the adapter equals the HF model at every real position."""
    config, seed, (ids, _, mask) = data.draw(case(family))
    model = eps.build_model(config, seed)
    with torch.no_grad():
        logits = engine.forward(wrap(model).adapter, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(logits[real], hf_logits(model, ids, mask)[real], atol=ATOL, rtol=0)
