"""Equivalence of the wrapped Hugging Face families with the Hugging Face models themselves.

For random tiny configs of each family (GPT-2, Llama, GPT-NeoX, Qwen2), random inputs and random right
padding, the engine keeping every edge must reproduce the model's own logits at every real position.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
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

from epverify.adapters import wrap
from epverify.core import engine

ATOL = 1e-4
EXAMPLES = settings(max_examples=12, deadline=None, derandomize=True)
FAMILIES = ("gpt2", "llama", "gpt_neox", "qwen2")

ROPES = [
    {"rope_type": "default", "rope_theta": 10000.0},
    {"rope_type": "default", "rope_theta": 37.0},
    {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
    {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
    {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 4,
        "rope_theta": 500.0,
    },
]


@st.composite
def configs(draw, family: str):
    """A tiny random config of `family`."""
    n_layers = draw(st.integers(1, 3))
    n_heads = draw(st.integers(1, 4))
    vocab = draw(st.integers(30, 60))
    tied = draw(st.booleans())
    common = dict(vocab_size=vocab, tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0)
    if family == "gpt2":
        head_dim = draw(st.integers(4, 16))
        return GPT2Config(
            n_layer=n_layers,
            n_head=n_heads,
            n_embd=n_heads * head_dim,
            n_positions=16,
            n_inner=draw(st.sampled_from([None, 12, 40])),
            scale_attn_weights=draw(st.booleans()),
            scale_attn_by_inverse_layer_idx=draw(st.booleans()),
            attn_implementation="eager",
            **common,
        )
    head_dim = 2 * draw(st.integers(2, 8))  # rotary needs an even head size
    if family == "gpt_neox":
        return GPTNeoXConfig(
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            hidden_size=n_heads * head_dim,
            intermediate_size=draw(st.sampled_from([12, 40])),
            rotary_pct=draw(st.sampled_from([0.25, 0.5, 1.0])),
            rotary_emb_base=draw(st.sampled_from([10000.0, 100.0])),
            use_parallel_residual=draw(st.booleans()),
            attention_bias=draw(st.booleans()),
            max_position_embeddings=16,
            attn_implementation="eager",
            **common,
        )
    n_kv = draw(st.sampled_from([k for k in range(1, n_heads + 1) if n_heads % k == 0]))
    shape = dict(
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=head_dim,
        hidden_size=draw(st.sampled_from([n_heads * head_dim, 20])),
        intermediate_size=draw(st.sampled_from([12, 40])),
        max_position_embeddings=16,
        attn_implementation="eager",
        **common,
    )
    if family == "llama":
        return LlamaConfig(
            rope_parameters=dict(draw(st.sampled_from(ROPES))),
            attention_bias=draw(st.booleans()),
            mlp_bias=draw(st.booleans()),
            **shape,
        )
    return Qwen2Config(rope_parameters=dict(draw(st.sampled_from(ROPES[:2]))), **shape)


MODEL_CLASSES = {
    "gpt2": GPT2LMHeadModel,
    "llama": LlamaForCausalLM,
    "gpt_neox": GPTNeoXForCausalLM,
    "qwen2": Qwen2ForCausalLM,
}


def build(family: str, config, seed: int):
    """The model with every parameter moved off its init (biases non-zero, norm weights not one)."""
    torch.manual_seed(seed)
    model = MODEL_CLASSES[family](config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.2)
    return model


@st.composite
def batches(draw, vocab: int):
    """Clean and corrupted ids (B, T) and a right-padded attention mask, at least one real token per row."""
    batch, seq = draw(st.integers(1, 3)), draw(st.integers(1, 8))
    lengths = draw(st.lists(st.integers(1, seq), min_size=batch, max_size=batch))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    corrupted = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = (torch.arange(seq)[None] < torch.tensor(lengths)[:, None]).long()
    return ids, corrupted, mask


def case(family: str):
    return st.tuples(configs(family), st.integers(0, 1000)).flatmap(
        lambda cs: st.tuples(st.just(cs[0]), st.just(cs[1]), batches(cs[0].vocab_size))
    )


def hf_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("family", FAMILIES)
@EXAMPLES
@given(data=st.data())
def test_masked_run_with_every_edge_equals_hf(family, data):
    """With every edge kept, the masked run (interchange ablation of random corrupted ids) equals HF."""
    config, seed, (ids, corrupted, mask) = data.draw(case(family))
    model = build(family, config, seed)
    adapter = wrap(model).adapter
    with torch.no_grad():
        ablated = engine.ablated_record(adapter, "interchange", ids, mask, corrupted_ids=corrupted)
        ones = torch.ones(adapter.graph.num_edges)
        logits = engine.masked_run(adapter, ids, ablated, ones, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(logits[real], hf_logits(model, ids, mask)[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@EXAMPLES
@given(data=st.data())
def test_forward_equals_hf(family, data):
    """The plain engine forward through the adapter equals the HF model at every real position."""
    config, seed, (ids, _, mask) = data.draw(case(family))
    model = build(family, config, seed)
    with torch.no_grad():
        logits = engine.forward(wrap(model).adapter, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(logits[real], hf_logits(model, ids, mask)[real], atol=ATOL, rtol=0)
