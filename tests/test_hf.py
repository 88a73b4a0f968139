"""Tests for the Hugging Face adapters and MaskedModel: edge counts, loading, no copies, ablated runs."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from epverify.adapters import wrap, wrap_pretrained
from epverify.core import oracle
from epverify.core.graph import count_edges
from epverify.errors import EpverifyError
from epverify.tracr.model import CompiledModel

VOCAB = 40
COMPILED = Path(__file__).resolve().parents[1] / "compiled_models"


def tiny(family: str, seed: int = 0, **overrides):
    """A tiny random model of `family` with every parameter moved off its init (non-zero biases)."""
    common = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    if family == "gpt2":
        model_class, config = (
            GPT2LMHeadModel,
            GPT2Config(n_layer=2, n_head=3, n_embd=24, n_positions=16, **common),
        )
    elif family == "llama":
        config = LlamaConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            hidden_size=32,
            intermediate_size=24,
            max_position_embeddings=16,
            attention_bias=True,
            **common,
        )
        model_class = LlamaForCausalLM
    elif family == "gpt_neox":
        config = GPTNeoXConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            hidden_size=32,
            intermediate_size=24,
            rotary_pct=0.5,
            max_position_embeddings=16,
            **common,
        )
        model_class = GPTNeoXForCausalLM
    else:
        config = Qwen2Config(
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            hidden_size=32,
            intermediate_size=24,
            max_position_embeddings=16,
            **common,
        )
        model_class = Qwen2ForCausalLM
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.2)
    return model


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


FAMILIES = ("gpt2", "llama", "gpt_neox", "qwen2")


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
    masked = wrap(tiny("qwen2"))  # 4 query heads, 1 KV head
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
    with pytest.raises(EpverifyError, match=r"unsupported architecture 'opt'.*gpt2, llama, gpt_neox, qwen2"):
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


def test_qwen2_sliding_window_longer_than_the_window_is_refused():
    model = tiny("qwen2", use_sliding_window=True, sliding_window=2, layer_types=["sliding_attention"] * 2)
    ids, _, _ = inputs(seq=4)
    with pytest.raises(EpverifyError, match="sliding-window"):
        wrap(model).run(ids)
    short = ids[:, :2]
    torch.testing.assert_close(wrap(model).run(short), hf_logits(model, short), atol=1e-5, rtol=0)


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
