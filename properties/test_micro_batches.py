"""Micro-batches change the memory of a step, not the step (`PruneConfig.micro_batch_size`).

Invariant: for any model, batch, mask setting and micro-batch size, a step's faithfulness and the gradient it sends
to every log-alpha equal those of the same step run in one pass (to 1e-5 relative), and the optimizer step that
follows is the same.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epverify import PruneConfig, PruneData, wrap
from epverify.scale.distributed import Parallel
from epverify.testing.strategies import HF_FAMILIES, build_model, model_configs, token_batches
from epverify.train.loop import Training

HF = HF_FAMILIES


def _step_gradients(adapter, data, config):
    training = Training(adapter, data, config, Parallel())
    gen = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():  # gates in their open range (the initial log-alphas clamp every mask at 1: no gradient)
        for p in training.params:
            p.copy_(torch.randn(p.shape, generator=gen) * 2)
    index, scale = training.sampler.next()
    faithfulness, surrogate = training.estimator(training.params, index, scale, training.gen)
    surrogate.backward()
    return faithfulness.detach(), [p.grad.clone() for p in training.params]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to 1e-5 of the largest magnitude (float32 sums in another order differ in the last bits)."""
    return bool(torch.allclose(a, b, rtol=0, atol=1e-5 * float(b.abs().max()) + 1e-9))


@settings(max_examples=8)
@given(st.data())
def test_micro_batches_give_the_step_of_one_pass(data):
    config_hf = data.draw(model_configs(HF), label="model config")
    model = build_model(config_hf)
    ids, corrupted, mask = data.draw(token_batches(config_hf.vocab_size, 6, min_batch=3, max_batch=7),
                                     label="batch")
    loss_mask = mask.bool()
    prune_data = PruneData(ids, mask, loss_mask, corrupted)
    adapter = wrap(model).adapter
    base = PruneConfig(batch_size=len(ids), steps=2, seed=data.draw(st.integers(0, 1000), label="seed"),
                       per_example_masks=data.draw(st.booleans(), label="per-example masks"),
                       node_masks=data.draw(st.booleans(), label="node masks"),
                       ablation=data.draw(st.sampled_from(["interchange", "zero", "mean"]), label="ablation"))
    size = data.draw(st.integers(1, len(ids) - 1), label="micro-batch size")
    whole, whole_grads = _step_gradients(adapter, prune_data, base)
    parts, part_grads = _step_gradients(adapter, prune_data, PruneConfig(**{**base.to_dict(),
                                                                             "score": base.score,
                                                                             "micro_batch_size": size}))
    assert _close(parts, whole), (float(parts), float(whole))
    assert float(whole) > 0 and any(float(g.abs().max()) > 0 for g in whole_grads)  # a step that moves something
    for got, want in zip(part_grads, whole_grads):
        assert _close(got, want), float((got - want).abs().max())
