"""The masked engine: equivalences with the full model, the corrupted model, the oracle, and plain autograd."""

import weakref

import pytest
import torch

from epverify.adapters import wrap
from epverify.adapters.registry import Sizes, family
from epverify.adapters.tracr import TracrAdapter
from epverify.core import engine, oracle
from epverify.errors import EpverifyError
from epverify.tracr import load
from epverify.tracr.data import dataset

PROGRAMS = ["reverse", "xproportion", "sort", "frac_prevs_causal", "hist"]


def _setup(name):
    model = load(name)
    adapter = TracrAdapter(model)
    clean, corrupted = dataset(model.dataset)
    clean, corrupted = clean[::7][:64], corrupted[::7][:64]
    ids, mask = model.encode(clean)
    corrupted_ids, _ = model.encode(corrupted)
    return model, adapter, ids, mask, corrupted_ids


def _ablated(adapter, ablation, ids, mask, corrupted_ids):
    mean = engine.mean_record([engine.full_run(adapter, ids, mask)], [mask]) if ablation == "mean" else None
    return engine.ablated_record(adapter, ablation, ids, mask, corrupted_ids, mean=mean)


@pytest.mark.parametrize("name", PROGRAMS)
@pytest.mark.parametrize("ablation", ["interchange", "zero", "mean"])
def test_all_masks_one_is_the_full_model(name, ablation):
    _, adapter, ids, mask, corrupted_ids = _setup(name)
    ones = torch.ones(adapter.graph.num_edges)
    out = engine.masked_run(adapter, ids, _ablated(adapter, ablation, ids, mask, corrupted_ids), ones,
                            attention_mask=mask)
    torch.testing.assert_close(out, engine.forward(adapter, ids, mask), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", PROGRAMS)
def test_all_masks_zero_under_interchange_is_the_corrupted_model(name):
    _, adapter, ids, mask, corrupted_ids = _setup(name)
    zeros = torch.zeros(adapter.graph.num_edges)
    out = engine.masked_run(adapter, ids, _ablated(adapter, "interchange", ids, mask, corrupted_ids), zeros,
                            attention_mask=mask)
    torch.testing.assert_close(out, engine.forward(adapter, corrupted_ids, mask), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", PROGRAMS)
@pytest.mark.parametrize("ablation", ["interchange", "zero", "mean"])
def test_binary_edge_sets_equal_the_oracle(name, ablation):
    """A binary edge set through the delta-form engine equals the oracle's plain sum: same decoded outputs
    everywhere, logits equal to float32 rounding."""
    model, adapter, ids, mask, corrupted_ids = _setup(name)
    graph = adapter.graph
    ablated = _ablated(adapter, ablation, ids, mask, corrupted_ids)
    gen = torch.Generator().manual_seed(0)
    truth = model.ground_truth[ablation]["edges"]
    candidates = [torch.rand(graph.num_edges, generator=gen) < p for p in (0.1, 0.5, 0.9)]
    truth_mask = torch.zeros(graph.num_edges, dtype=torch.bool)
    truth_mask[graph.index_of([tuple(e) for e in truth])] = True
    for keep in [*candidates, truth_mask]:
        edges = [e for e, k in zip(graph.edges, keep.tolist()) if k]
        ours = engine.masked_run(adapter, ids, ablated, keep.float(), attention_mask=mask)
        theirs = oracle.run_with_edges(adapter, ids, edges, ablation, mask, corrupted_ids, reference=(ids, mask))
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        assert model.decode(ours, mask) == model.decode(theirs, mask)


def _plain_soft_run(adapter, ids, mask, corrupted_ids, z):
    """The left-hand form with soft masks, through ordinary autograd: x_r = bias(r) + sum_w z h_w + (1 - z) h~_w,
    bias(r) the attention-output biases upstream of r."""
    graph = adapter.graph
    corrupt, _ = oracle.writer_outputs(adapter, corrupted_ids, mask)
    outputs = dict(zip(adapter.embed_names, adapter.embed(ids)))

    def reader_input(reader, n_writers, bias):
        x = bias
        for w in graph.writers[:n_writers]:
            zw = z[..., graph.edge_index[(w, reader)]]
            zw = zw[:, None, None] if z.dim() == 2 else zw  # per-example masks: one value per row
            x = x + zw * outputs[w] + (1 - zw) * corrupt[w]
        return x

    bias = 0
    for layer in range(adapter.n_layers):
        group = graph.attn_group(layer)
        x = torch.stack([reader_input(r, group.n_writers, bias) for r in group.readers])
        h, kv = adapter.n_heads, adapter.n_kv_heads
        a = adapter.attention(layer, *adapter.attention_qkv(layer, *x.split([h, kv, kv])), mask)
        outputs.update({f"a{layer}.h{i}": w for i, w in enumerate(adapter.head_writes(layer, a))})
        layer_bias = adapter.attention_bias(layer)
        after = bias if layer_bias is None else bias + layer_bias
        mlp_in = reader_input(f"m{layer}", graph.mlp_group(layer).n_writers, bias if adapter.parallel_mlp else after)
        outputs[f"m{layer}"] = adapter.mlp(layer, mlp_in)
        bias = after
    return adapter.unembed(reader_input("resid_post", len(graph.writers), bias))


@pytest.mark.parametrize("name", ["reverse", "sort"])
def test_delta_stack_gradients_equal_plain_autograd(name):
    """The shared-buffer backward of the delta stack gives the same mask gradients as autograd on the plain sum."""
    _, adapter, ids, mask, corrupted_ids = _setup(name)
    ids, mask, corrupted_ids = ids[:16], mask[:16], corrupted_ids[:16]
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(adapter.graph.num_edges, generator=gen, dtype=torch.float64)
    weights = torch.randn(*ids.shape, adapter.model.weights["unembed"].shape[1], generator=gen)
    adapter.model.weights = {k: v.double() for k, v in adapter.model.weights.items()}
    adapter = TracrAdapter(adapter.model)
    weights = weights.double()

    _assert_mask_gradients_match_plain(adapter, ids, mask, corrupted_ids, z, weights, atol=1e-8, rtol=1e-6)


def _assert_mask_gradients_match_plain(adapter, ids, mask, corrupted_ids, z, weights, atol, rtol):
    """The mask gradients of sum(weights * outputs) through `engine.masked_run` (interchange ablation) equal
    autograd's through the plain soft-masked sum."""
    z1 = z.clone().requires_grad_()
    ablated = engine.ablated_record(adapter, "interchange", ids, mask, corrupted_ids)
    (engine.masked_run(adapter, ids, ablated, z1, attention_mask=mask) * weights).sum().backward()
    z2 = z.clone().requires_grad_()
    (_plain_soft_run(adapter, ids, mask, corrupted_ids, z2) * weights).sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, atol=atol, rtol=rtol)


@pytest.mark.parametrize("name", ["reverse", "sort"])
def test_per_example_masks_node_masks_and_positions_match_plain_autograd(name):
    """Per-example edge masks with node masks, read at a few positions: the same outputs and the same edge and
    node gradients as autograd on the plain sum with the node masks folded into the edges."""
    _, adapter, ids, mask, corrupted_ids = _setup(name)
    ids, mask, corrupted_ids = ids[:12], mask[:12], corrupted_ids[:12]
    adapter.model.weights = {k: v.double() for k, v in adapter.model.weights.items()}
    adapter = TracrAdapter(adapter.model)
    graph = adapter.graph
    gen = torch.Generator().manual_seed(3)
    z = torch.rand(len(ids), graph.num_edges, generator=gen, dtype=torch.float64)
    node = torch.rand(len(ids), len(graph.writers), generator=gen, dtype=torch.float64)
    positions = (torch.rand(ids.shape, generator=gen) < 0.4) & mask.bool()
    positions[0, 0] = True
    weights = torch.randn(int(positions.sum()), adapter.model.weights["unembed"].shape[1], generator=gen).double()

    z1, n1 = z.clone().requires_grad_(), node.clone().requires_grad_()
    ablated = engine.ablated_record(adapter, "interchange", ids, mask, corrupted_ids)
    ours = engine.masked_run(adapter, ids, ablated, z1, n1, mask, positions=positions)
    (ours * weights).sum().backward()
    z2, n2 = z.clone().requires_grad_(), node.clone().requires_grad_()
    folded = z2 * n2[:, torch.tensor(graph.edge_writer)]
    theirs = _plain_soft_run(adapter, ids, mask, corrupted_ids, folded)[positions]
    (theirs * weights).sum().backward()
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(z1.grad, z2.grad, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(n1.grad, n2.grad, atol=1e-8, rtol=1e-6)


def _tiny_hf(name: str, dtype: torch.dtype):
    """A 3-layer Hugging Face model with several heads: grouped KV heads (llama), a parallel MLP (neox),
    post-norms (gemma2, olmo2; OLMo 2's q/k norm over all heads)."""
    model = family(name).tiny_model(Sizes(n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, d_model=32, d_mlp=24))
    return wrap(model.to(dtype)).adapter


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox", "gemma2", "olmo2"])
@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("fold_bytes", [1, 2**40])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hf_mask_gradients_equal_plain_autograd(family, per_example, fold_bytes, dtype, monkeypatch):
    """Several heads per layer, whose gradients the stack folds through the upstream layers' output projections
    one layer at a time (fold_bytes 1) or all at once, in the model's dtype (float32: in place in the float32
    gradient buffers) or not (float64): the same mask gradients as autograd on the plain sum, to the precision of
    the float32 buffers (weights moved off their init give gradients of order 1: float32 sums of a few hundred
    such terms agree to about 1e-5 relative, so float32 is held to rtol 1e-4, float64 to 1e-5)."""
    make = engine.DeltaStack.__init__
    monkeypatch.setattr(engine.DeltaStack, "__init__", lambda self, *shape, **_: make(self, *shape, fold_bytes))
    adapter = _tiny_hf(family, dtype)
    gen = torch.Generator().manual_seed(4)
    ids, corrupted_ids = torch.randint(0, 40, (2, 3, 5), generator=gen)
    mask = torch.ones_like(ids)
    shape = (len(ids), adapter.graph.num_edges) if per_example else (adapter.graph.num_edges,)
    z = torch.rand(shape, generator=gen, dtype=dtype)
    weights = torch.randn(*ids.shape, 40, generator=gen, dtype=dtype)

    rtol = 1e-5 if dtype == torch.float64 else 1e-4
    _assert_mask_gradients_match_plain(adapter, ids, mask, corrupted_ids, z, weights, atol=1e-5, rtol=rtol)


def test_positions_must_be_one_flag_per_token():
    _, adapter, ids, mask, corrupted_ids = _setup("reverse")
    ablated = engine.ablated_record(adapter, "zero", ids, mask)
    with pytest.raises(EpverifyError, match="one flag per input token"):
        engine.masked_run(adapter, ids, ablated, torch.ones(adapter.graph.num_edges), attention_mask=mask,
                          positions=mask)


def test_a_forward_without_backward_frees_its_delta_stack(monkeypatch):
    """Masks that need gradients but whose backward never runs (an evaluation outside no_grad, an error before
    the backward): once the outputs are dropped, the delta stack and its activations are freed."""
    _, adapter, ids, mask, corrupted_ids = _setup("sort")
    ablated = engine.ablated_record(adapter, "interchange", ids, mask, corrupted_ids)
    stacks = []
    make = engine.DeltaStack.__init__

    def tracked(self, *args, **kwargs):
        make(self, *args, **kwargs)
        stacks.append(weakref.ref(self))

    monkeypatch.setattr(engine.DeltaStack, "__init__", tracked)
    z = torch.rand(adapter.graph.num_edges, requires_grad=True)
    for _ in range(3):
        engine.masked_run(adapter, ids, ablated, z, attention_mask=mask).sum()
    assert len(stacks) == 3 and all(ref() is None for ref in stacks)


def test_clean_and_corrupted_batches_of_different_shapes_are_rejected():
    _, adapter, ids, mask, corrupted_ids = _setup("reverse")
    with pytest.raises(EpverifyError, match="same length"):
        engine.ablated_record(adapter, "interchange", ids, mask, corrupted_ids[:, :-1])
    ablated = engine.ablated_record(adapter, "interchange", ids[:4], mask[:4], corrupted_ids[:4])
    with pytest.raises(EpverifyError, match="same shape"):
        engine.masked_run(adapter, ids, ablated, torch.ones(adapter.graph.num_edges), attention_mask=mask)


def test_wrong_mask_length_is_rejected():
    _, adapter, ids, mask, corrupted_ids = _setup("reverse")
    ablated = engine.ablated_record(adapter, "zero", ids, mask)
    with pytest.raises(EpverifyError, match="one value per edge"):
        engine.masked_run(adapter, ids, ablated, torch.ones(3), attention_mask=mask)


@pytest.mark.parametrize("per_example", [False, True])
def test_layer_checkpointing_and_reader_chunks_give_the_same_logits_and_gradients(per_example, monkeypatch):
    _, adapter, ids, mask, corrupted_ids = _setup("sort")
    ablated = engine.ablated_record(adapter, "interchange", ids, mask, corrupted_ids)
    gen = torch.Generator().manual_seed(2)
    shape = (ids.shape[0], adapter.graph.num_edges) if per_example else (adapter.graph.num_edges,)
    z = torch.rand(shape, generator=gen)
    weights = torch.randn(*ids.shape, 1, generator=gen)
    grads, outs = [], []
    for checkpoint in (False, True):
        if checkpoint:  # and readers mixed one at a time
            monkeypatch.setattr(engine, "READER_CHUNK_BYTES", 1)
        zz = z.clone().requires_grad_()
        out = engine.masked_run(adapter, ids, ablated, zz, attention_mask=mask, checkpoint=checkpoint)
        (out * weights).sum().backward()
        grads.append(zz.grad)
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)
