"""The registry of Hugging Face families: one `Family` record per family, declared in its adapter module.

Everything that depends on the family reads it from here: which adapter wraps a `model_type`
(`epverify.adapters`), the decoder layer class FSDP shards (`epverify.scale.distributed`), the sizes the memory
estimate needs (`epverify.scale.memory`), tiny random configs for tests and Hypothesis strategies
(`epverify.testing.strategies`) and the README's list of families.

Adding a family: write its adapter module with a `FAMILIES` tuple of `Family` records, and add the module's
name to `MODULES` below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from ..errors import EpverifyError

MODULES = ("gpt2", "llama", "neox", "gemma", "phi3", "olmo2")  # epverify.adapters.<module> declares FAMILIES


@dataclass(frozen=True)
class Sizes:
    """The sizes of a tiny test config, in one vocabulary for every family."""

    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 8
    d_model: int = 32
    d_mlp: int = 40
    vocab: int = 40
    tied: bool = False


@dataclass(frozen=True)
class Family:
    """What the rest of epverify needs to know about one Hugging Face family.

    name: the registry key (the `model_type` of its main config); model_types: every `model_type` it wraps;
    adapter: its Adapter class; layer_class: the decoder layer class (what FSDP shards, by name);
    config: a tiny config from `Sizes` and family options (keyword arguments of the Hugging Face config class);
    options: `options(draw, sizes) -> dict`, family options drawn by the Hypothesis strategies (`draw` is
    Hypothesis's; None: no options); shape: the memory estimate's `Shape` of a config (None: the standard names,
    `epverify.scale.memory.standard_shape`); grouped_kv: whether the family may have fewer key/value heads than
    query heads; free_width: whether d_model may differ from n_heads * head_dim; rotary: whether head_dim must be
    even; notes: what the README's list says of it; defaults: options every tiny config gets unless overridden.
    """

    name: str
    model_types: tuple[str, ...]
    adapter: type
    layer_class: str
    config: Callable[..., object]
    options: Callable[[Callable, Sizes], dict] | None = None
    shape: Callable[[object], object] | None = None
    grouped_kv: bool = True
    free_width: bool = True
    rotary: bool = True
    notes: str = ""
    defaults: dict = field(default_factory=dict)

    def tiny_config(self, sizes: Sizes | None = None, **options):
        """A tiny config of this family (eager attention): `Sizes` as given (or the defaults), adjusted to what
        the family allows (no grouped KV heads, d_model = heads x head_dim), and family options."""
        return self.config(self.fit(sizes or Sizes()), **{**self.defaults, **options})

    def fit(self, s: Sizes) -> Sizes:
        from dataclasses import replace

        if not self.grouped_kv:
            s = replace(s, n_kv_heads=s.n_heads)
        if not self.free_width:
            s = replace(s, d_model=s.n_heads * s.head_dim)
        return s

    def tiny_model(self, sizes: Sizes | None = None, seed: int = 0, **options):
        """A tiny random causal LM of this family in eval mode, every parameter moved off its initial value."""
        return build(self.tiny_config(sizes, **options), seed)


def build(config, seed: int = 0):
    """The causal LM of a config, in eval mode, every parameter moved off its init (biases non-zero, norm weights
    not at their initial values), so a test cannot pass by a weight that happens to be zero or one."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.2)
    return model


@cache
def families() -> dict[str, Family]:
    """Every registered family by name, in MODULES order."""
    out: dict[str, Family] = {}
    for module in MODULES:
        for fam in importlib.import_module(f"{__package__}.{module}").FAMILIES:
            out[fam.name] = fam
    return out


@cache
def by_model_type() -> dict[str, Family]:
    return {t: fam for fam in families().values() for t in fam.model_types}


def supported_text() -> str:
    return ", ".join(by_model_type()) + " (Hugging Face model_type) and Tracr compiled models"


def family_of(model_type: str | None, where: str = "") -> Family:
    """The family of a Hugging Face `model_type`, or one EpverifyError naming the supported ones."""
    fam = by_model_type().get(model_type or "")
    if fam is None:
        raise EpverifyError(f"unsupported architecture {model_type!r}{where}: supported are {supported_text()}")
    return fam


def family(name: str) -> Family:
    """A family by its registry name."""
    try:
        return families()[name]
    except KeyError:
        raise EpverifyError(f"unknown family {name!r}: choose one of {', '.join(families())}") from None


def markdown_table() -> str:
    """The README's table of supported families (a test checks the README carries it as the registry has it)."""
    rows = ["| family | `model_type` | decoder layer (FSDP wraps it) | covers |", "|---|---|---|---|"]
    for fam in families().values():
        types = ", ".join(f"`{t}`" for t in fam.model_types)
        rows.append(f"| {fam.name} | {types} | `{fam.layer_class}` | {fam.notes} |")
    return "\n".join(rows) + "\n"


def hf_config(class_name: str, s: Sizes, **kwargs):
    """A config of transformers' `class_name` with the usual names for the sizes (Llama's layout of names)."""
    import transformers

    cls = getattr(transformers, class_name)
    return cls(num_hidden_layers=s.n_layers, num_attention_heads=s.n_heads, num_key_value_heads=s.n_kv_heads,
               head_dim=s.head_dim, hidden_size=s.d_model, intermediate_size=s.d_mlp, vocab_size=s.vocab,
               tie_word_embeddings=s.tied, max_position_embeddings=128, bos_token_id=0, eos_token_id=0,
               pad_token_id=0, attn_implementation="eager", **kwargs)


ROPES = (
    {"rope_type": "default", "rope_theta": 10000.0},
    {"rope_type": "default", "rope_theta": 37.0},
    {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
)


def draw_rope(draw) -> dict:
    """rope_parameters drawn for a rotary family."""
    from hypothesis import strategies as st

    return {"rope_parameters": dict(draw(st.sampled_from(ROPES)))}


def draw_window(draw, s: Sizes) -> dict:
    """A sliding window (1..3 tokens, so short test inputs cross it) and which layers slide."""
    from hypothesis import strategies as st

    window = draw(st.integers(1, 3))
    types = draw(st.lists(st.sampled_from(["sliding_attention", "full_attention"]), min_size=s.n_layers,
                          max_size=s.n_layers))
    return {"sliding_window": window, "layer_types": types}
