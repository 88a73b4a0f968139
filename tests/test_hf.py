"""Tests for the Hugging Face adapters and MaskedModel: edge counts, loading, no copies, ablated runs."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from epverify.adapters import wrap, wrap_pretrained
from epverify.adapters.registry import Sizes, families, family
from epverify.core import oracle
from epverify.core.graph import count_edges
from epverify.errors import EpverifyError
from epverify.tracr.model import CompiledModel

VOCAB = 40
COMPILED = Path(__file__).resolve().parents[1] / "compiled_models"


def tiny(name: str, seed: int = 0, sizes: Sizes | None = None, **options):
    """A tiny random model of a registered family, every parameter moved off its init (the registry's builder)."""
    return family(name).tiny_model(sizes or Sizes(vocab=VOCAB), seed, **options)


def inputs(seed: int = 0, batch: int = 3, seq: int = 6):
    """Clean ids, corrupted ids and a right-padded attention mask (row lengths seq, 3, 1, ...)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    corrupted = torch.randint(0, VOCAB, (batch, seq), generator=g)
    lengths = torch.tensor([seq, 3, 1][:batch])
    mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    return ids, corrupted, mask


def hf_logits(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


FAMILIES = tuple(families())


# ----- graph sizes ------------------------------------------------------------------------------------------
def test_gpt2_small_edge_count_on_meta():
    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config())
    masked = wrap(model)
    assert masked.num_edges == 32936
    assert masked.writers[:3] == ["tok_embeds", "pos_embeds", "a0.h0"]


def test_codellama_13b_edge_count_on_meta():
    config = LlamaConfig(
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        vocab_size=32016,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    masked = wrap(model)
    assert masked.num_edges == 3_877_661 == count_edges(40, 40, 40, 1)
    assert masked.writers[0] == "embeds"


def test_grouped_query_attention_has_k_and_v_readers_per_kv_head():
    masked = wrap(tiny("qwen2", sizes=Sizes(vocab=VOCAB, n_kv_heads=1)))  # 4 query heads, 1 KV head
    layer0 = [r for r in masked.readers if r.startswith("a0.")]
    assert layer0 == ["a0.h0.q", "a0.h1.q", "a0.h2.q", "a0.h3.q", "a0.h0.k", "a0.h0.v"]


def test_neox_parallel_mlp_does_not_read_its_own_layer_heads():
    parallel = wrap(tiny("gpt_neox"))
    sequential = wrap(tiny("gpt_neox", use_parallel_residual=False))
    assert parallel.graph.parallel_mlp and not sequential.graph.parallel_mlp
    assert ["a0.h0", "m0"] not in parallel.edges
    assert ["a0.h0", "m0"] in sequential.edges
    assert sequential.num_edges - parallel.num_edges == 2 * 4  # each layer's MLP reads its 4 heads


# ----- dispatch and errors ----------------------------------------------------------------------------------
def test_unsupported_architecture_is_named_with_the_supported_list():
    fake = SimpleNamespace(config=SimpleNamespace(model_type="opt"), lm_head=object())
    supported = ", ".join(t for fam in families().values() for t in fam.model_types)
    with pytest.raises(EpverifyError, match=rf"unsupported architecture 'opt': supported are {supported} "):
        wrap(fake)
    with pytest.raises(EpverifyError, match="cannot wrap a str"):
        wrap("gpt2")


def test_base_model_without_lm_head_is_refused():
    with pytest.raises(EpverifyError, match="no lm_head"):
        wrap(tiny("gpt2").transformer)


def test_wrap_pretrained_missing_path_names_it(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(EpverifyError, match="no-such-model"):
        wrap_pretrained(missing)


def test_wrap_pretrained_unsupported_config(tmp_path):
    from transformers import OPTConfig

    OPTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=16).save_pretrained(
        tmp_path
    )
    with pytest.raises(EpverifyError, match=r"unsupported architecture 'opt'"):
        wrap_pretrained(tmp_path)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_wrap_pretrained_matches_in_memory_model(family, tmp_path):
    model = tiny(family)
    model.save_pretrained(tmp_path)
    loaded = wrap_pretrained(tmp_path)
    ids, _, mask = inputs()
    real = mask.bool()
    torch.testing.assert_close(
        loaded.run(ids, mask)[real], hf_logits(model, ids, mask)[real], atol=1e-5, rtol=0
    )
    assert not loaded.adapter.model.training


def test_wrap_pretrained_dtype(tmp_path):
    tiny("llama").save_pretrained(tmp_path)
    loaded = wrap_pretrained(tmp_path, dtype=torch.float64)
    assert loaded.adapter.dtype == torch.float64
    ids, _, mask = inputs()
    assert loaded.run(ids, mask).dtype == torch.float64


def test_wrap_accepts_a_compiled_tracr_model():
    compiled = CompiledModel.load(COMPILED / "sort")
    masked = wrap(compiled)
    assert masked.num_edges == compiled.total_edges
    assert masked.writers[:2] == ["tok_embeds", "pos_embeds"]


WINDOWED = {  # a family option that changes the output on inputs of 6 tokens, and the config without it
    "qwen2": ({"use_sliding_window": True, "sliding_window": 2, "layer_types": ["sliding_attention"] * 2},
              {"use_sliding_window": False}),
    "mistral": ({"sliding_window": 2}, {"sliding_window": None}),
    "phi3": ({"sliding_window": 3}, {"sliding_window": None}),
    "gemma2": ({"sliding_window": 2, "attn_logit_softcapping": 1.0, "final_logit_softcapping": 2.0},
               {"sliding_window": 64, "attn_logit_softcapping": None, "final_logit_softcapping": None}),
    "gemma3_text": ({"sliding_window": 2}, {"sliding_window": 64}),
}


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_sliding_windows_and_soft_capping_are_reproduced_and_matter(name):
    """Windows (and Gemma 2's soft-capping) reproduce the model's logits, and they change them: the inputs are
    longer than the window, so a run that ignored it would differ."""
    option, plain = WINDOWED[name]
    model, unwindowed = tiny(name, **option), tiny(name, **plain)
    ids, corrupted, mask = inputs()
    real = mask.bool()
    expected = hf_logits(model, ids, mask)[real]
    assert (expected - hf_logits(unwindowed, ids, mask)[real]).abs().max() > 1e-3
    masked = wrap(model)
    torch.testing.assert_close(masked.run(ids, mask)[real], expected, atol=1e-5, rtol=0)
    kept = masked.edges[::2]
    expected = oracle.run_with_edges(masked.adapter, ids, kept, "interchange", attention_mask=mask,
                                     corrupted_ids=corrupted)
    torch.testing.assert_close(masked.run(ids, mask, corrupted_ids=corrupted, edges=kept), expected, atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize("name", ["gemma2", "gemma3_text", "olmo2"])
def test_post_norm_head_writes_sum_to_the_layer_output_and_node_masks_stay_out_of_rho(name):
    """Under a post-norm each head writes g * (W_o a_h) / rho: the heads sum to the post-norm of the attention
    module's own output; a node mask removing a head equals removing that head's edges (rho stays this run's)."""
    from epverify.core import engine

    model = tiny(name)
    adapter = wrap(model).adapter
    ids, corrupted, mask = inputs()
    captured = {}
    hook = adapter.layers[1].self_attn.register_forward_hook(lambda m, args, out: captured.update(out=out[0]))
    hf_logits(model, ids, mask)
    hook.remove()
    with torch.no_grad():
        writes = adapter.head_writes(1, engine.full_run(adapter, ids, mask).heads[1])  # (H, B, T, d)
        expected = adapter.layers[1].post_attention_layernorm(captured["out"])
        real = mask.bool()
        torch.testing.assert_close(writes.sum(0)[real], expected[real], atol=1e-5, rtol=0)
        graph = adapter.graph
        node = torch.ones(len(graph.writers))
        node[graph.writer_index["a1.h0"]] = 0
        ablated = engine.ablated_record(adapter, "interchange", ids, mask, corrupted_ids=corrupted)
        by_node = engine.masked_run(adapter, ids, ablated, torch.ones(graph.num_edges), node, attention_mask=mask)
    kept = [e for e in graph.edges if e[0] != "a1.h0"]
    by_edges = oracle.run_with_edges(adapter, ids, kept, "interchange", attention_mask=mask, corrupted_ids=corrupted)
    torch.testing.assert_close(by_node, by_edges, atol=1e-5, rtol=0)


# ----- no copies, no changes --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_wrapping_copies_and_changes_no_weights(family):
    """Wrapping sets eval mode and freezes the model; its parameters keep their storage and values."""
    model = tiny(family)
    model.train()
    before = {name: (p.data_ptr(), p.detach().clone()) for name, p in model.named_parameters()}
    masked = wrap(model)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    ids, corrupted, mask = inputs()
    masked.run(ids, mask, corrupted_ids=corrupted, edges=masked.edges[::3])
    for name, p in model.named_parameters():
        ptr, value = before[name]
        assert p.data_ptr() == ptr, name
        assert torch.equal(p, value), name
    # the per-head weights the adapter reads are views of the model's own parameters
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weights = masked.adapter.head_weights(1)
    for tensor in (weights.q, weights.k, weights.v, weights.o):
        assert tensor.untyped_storage().data_ptr() in params


# ----- runs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_no_edges_with_interchange_is_the_model_on_the_corrupted_input(family):
    model = tiny(family)
    ids, corrupted, mask = inputs()
    logits = wrap(model).run(ids, mask, corrupted_ids=corrupted, edges=[])
    real = mask.bool()
    torch.testing.assert_close(logits[real], hf_logits(model, corrupted, mask)[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_random_edge_subset_matches_the_oracle(family):
    model = tiny(family, seed=1)
    masked = wrap(model)
    ids, corrupted, mask = inputs(seed=1)
    rng = random.Random(family)
    kept = [e for e in masked.edges if rng.random() < 0.5]
    logits = masked.run(ids, mask, corrupted_ids=corrupted, edges=kept)
    expected = oracle.run_with_edges(
        masked.adapter, ids, kept, "interchange", attention_mask=mask, corrupted_ids=corrupted
    )
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    # the same set as a tensor mask
    by_mask = masked.run(ids, mask, corrupted_ids=corrupted, edge_mask=masked.edge_mask(kept))
    torch.testing.assert_close(by_mask, logits, atol=0, rtol=0)


def test_zero_ablation_of_a_subset_matches_the_oracle():
    masked = wrap(tiny("gpt2"))
    ids, _, mask = inputs()
    kept = masked.edges[::2]
    logits = masked.run(ids, mask, edges=kept, ablation="zero")
    expected = oracle.run_with_edges(masked.adapter, ids, kept, "zero", attention_mask=mask)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_every_edge_without_corrupted_input_is_the_plain_model():
    model = tiny("llama")
    ids, _, mask = inputs()
    real = mask.bool()
    torch.testing.assert_close(
        wrap(model).run(ids, mask)[real], hf_logits(model, ids, mask)[real], atol=1e-5, rtol=0
    )


def test_unknown_edge_is_an_error_naming_it():
    masked = wrap(tiny("gpt2"))
    ids, corrupted, _ = inputs()
    with pytest.raises(EpverifyError, match=r"\['a9.h0', 'm9'\]"):
        masked.run(ids, corrupted_ids=corrupted, edges=[["a9.h0", "m9"]])
    with pytest.raises(EpverifyError, match="pair"):
        masked.run(ids, corrupted_ids=corrupted, edges=["a0.h0"])


def test_edges_and_edge_mask_together_are_refused():
    masked = wrap(tiny("gpt2"))
    ids, corrupted, _ = inputs()
    with pytest.raises(EpverifyError, match="either edges or edge_mask"):
        masked.run(ids, corrupted_ids=corrupted, edges=[], edge_mask=torch.ones(masked.num_edges))


def test_interchange_without_corrupted_input_is_refused():
    masked = wrap(tiny("gpt2"))
    ids, _, _ = inputs()
    with pytest.raises(EpverifyError, match="corrupted"):
        masked.run(ids, edges=[])


def test_gradients_flow_to_a_soft_edge_mask():
    masked = wrap(tiny("llama"))
    ids, corrupted, mask = inputs()
    z = torch.full((masked.num_edges,), 0.5, requires_grad=True)
    masked.run(ids, mask, corrupted_ids=corrupted, edge_mask=z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in masked.adapter.model.parameters())


def test_the_readme_lists_the_registered_families_as_the_registry_has_them():
    from epverify.adapters.registry import markdown_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert markdown_table() in readme, "README's family table is stale: paste registry.markdown_table()"
