"""Hypothesis strategies for testing circuit finders and the engine: models, masks, batches, RASP programs.

    from hypothesis import given
    from epverify import strategies as eps

    @given(shape=eps.tracr_shapes(), data=st.data())
    def test_my_invariant(shape, data):
        model = shape.build()                                    # a random Tracr-shaped CompiledModel
        graph = wrap(model).graph
        ids, corrupted, mask = data.draw(eps.token_batches(shape.vocab_size, shape.max_seq_len + 1))
        kept = data.draw(eps.binary_edge_sets(graph))          # a set of (writer, reader) edges

- `model_configs(families)`: tiny Hugging Face configs (every registered family) and `TracrShape`s; turn
  any of them into a model with `build_model(config, seed)`.
- `tracr_shapes()` / `tracr_models()`: random models with the Tracr layout (no layer norm, ReLU MLPs, no
  attention biases, an unembedding that projects the residual), random sizes and weights.
- `edge_masks(graph)`: soft masks (num_edges,) in [0, 1]; `binary_edge_sets(graph)`: sets of edges.
- `token_batches(vocab_size, max_len)`: clean ids, corrupted ids and a right-padded attention mask.
- `rasp_programs()`: RASP programs from a small grammar, as `RaspProgram`s whose repr is the program's source.

Large tensors are drawn from a seed and a few shape parameters rather than element by element, so examples
stay small for Hypothesis; they shrink towards the simple cases (all ones, all zeros, small seeds).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from ..core.graph import ComponentGraph


def _hf_families() -> tuple[str, ...]:
    from ..adapters.registry import families

    return tuple(families())


HF_FAMILIES = _hf_families()  # every registered Hugging Face family
FAMILIES = (*HF_FAMILIES, "tracr")


# ----- Tracr-shaped random models ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TracrShape:
    """The sizes of a random Tracr-shaped model and the seed of its weights; `build()` makes the model."""

    n_layers: int
    n_heads: int
    key_size: int
    d_model: int
    mlp_hidden: int
    vocab_size: int
    max_seq_len: int  # positions: BOS plus max_seq_len tokens
    n_outputs: int  # categorical: output values; numerical: 1
    categorical: bool
    causal: bool
    seed: int = 0

    def build(self, dtype: torch.dtype = torch.float64):
        """A CompiledModel with random weights of this shape (float64 by default, for tight comparisons).

        Weights are scaled by 1/sqrt(fan-in) so activations stay of order one through the layers; MLP biases
        are random (tracr's MLPs have biases); attention has none, as in tracr.
        """
        from ..tracr.model import CompiledModel

        gen = torch.Generator().manual_seed(self.seed)
        d, hk, hidden = self.d_model, self.n_heads * self.key_size, self.mlp_hidden

        def rand(*shape, scale=1.0):
            return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

        w = {
            "token_embed": rand(self.vocab_size, d),
            "pos_embed": rand(self.max_seq_len + 1, d),
            "unembed": rand(d, self.n_outputs, scale=d**-0.5),
        }
        for layer in range(self.n_layers):
            p = f"layers.{layer}."
            for part in ("query", "key", "value"):
                w[p + part] = rand(d, hk, scale=d**-0.5)
            w[p + "linear"] = rand(hk, d, scale=hk**-0.5)
            w[p + "mlp1_w"] = rand(d, hidden, scale=d**-0.5)
            w[p + "mlp1_b"] = rand(hidden, scale=0.5)
            w[p + "mlp2_w"] = rand(hidden, d, scale=hidden**-0.5)
            w[p + "mlp2_b"] = rand(d, scale=0.5)
        tokens = list(range(self.vocab_size))
        return CompiledModel(
            name=f"random_{self.seed}",
            weights=w,
            vocab=tokens,
            max_seq_len=self.max_seq_len,
            causal=self.causal,
            residual_labels=[f"r{i}" for i in range(d)],
            input_encoding={t: t for t in tokens},
            output_values=list(range(self.n_outputs)) if self.categorical else None,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            key_size=self.key_size,
        )


@st.composite
def tracr_shapes(draw, max_layers: int = 3, max_heads: int = 3, max_d_model: int = 16) -> TracrShape:
    """Random Tracr-shaped model sizes: 1..max_layers layers, 1..max_heads heads, small widths."""
    categorical = draw(st.booleans())
    return TracrShape(
        n_layers=draw(st.integers(1, max_layers)),
        n_heads=draw(st.integers(1, max_heads)),
        key_size=draw(st.integers(1, 6)),
        d_model=draw(st.integers(2, max_d_model)),
        mlp_hidden=draw(st.integers(1, 16)),
        vocab_size=draw(st.integers(2, 8)),
        max_seq_len=draw(st.integers(1, 6)),
        n_outputs=draw(st.integers(2, 5)) if categorical else 1,
        categorical=categorical,
        causal=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def tracr_models(**sizes) -> st.SearchStrategy:
    """Random Tracr-shaped CompiledModels (float64 weights); `sizes` as for `tracr_shapes`."""
    return tracr_shapes(**sizes).map(lambda shape: shape.build())


# ----- Hugging Face configs ---------------------------------------------------------------------------------
@st.composite
def hf_configs(draw, family: str):
    """A tiny random Hugging Face config of a registered family (`epverify.adapters.registry`), eager
    attention: random sizes within what the family allows, then the family's own options (norms, windows,
    soft-capping, rotary settings) as it draws them."""
    from ..adapters.registry import Sizes
    from ..adapters.registry import family as registered

    fam = registered(family)
    n_heads = draw(st.integers(1, 4))
    head_dim = 2 * draw(st.integers(2, 6)) if fam.rotary else draw(st.integers(4, 12))
    sizes = fam.fit(Sizes(
        n_layers=draw(st.integers(1, 3)), n_heads=n_heads,
        n_kv_heads=draw(st.sampled_from([k for k in range(1, n_heads + 1) if n_heads % k == 0])),
        head_dim=head_dim, d_model=n_heads * draw(st.sampled_from([head_dim, head_dim + 3])),
        d_mlp=draw(st.sampled_from([12, 40])), vocab=draw(st.integers(30, 60)), tied=draw(st.booleans())))
    options = fam.options(draw, sizes) if fam.options is not None else {}
    return fam.tiny_config(sizes, **options)


def model_configs(families: tuple[str, ...] = FAMILIES) -> st.SearchStrategy:
    """Tiny model configs of the given families: Hugging Face configs, or `TracrShape` for "tracr"."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}: choose from {', '.join(FAMILIES)}")
    return st.one_of(*[tracr_shapes() if f == "tracr" else hf_configs(f) for f in families])


def build_model(config, seed: int = 0):
    """The model of a `model_configs()` config: a CompiledModel for a TracrShape, else the Hugging Face causal
    LM in eval mode, every parameter moved off its initial value (biases non-zero, norm weights not one)."""
    if isinstance(config, TracrShape):
        return config.build()
    from ..adapters.registry import build

    return build(config, seed)


# ----- masks and edge sets ----------------------------------------------------------------------------------
MASK_KINDS = ("ones", "zeros", "binary", "uniform", "extremes")


@st.composite
def edge_masks(draw, graph: ComponentGraph, kinds: tuple[str, ...] = MASK_KINDS,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A mask (num_edges,) in [0, 1]: all ones, all zeros, random binary, uniform, or mostly exact 0 and 1."""
    kind = draw(st.sampled_from(kinds))
    n = graph.num_edges
    if kind == "ones":
        return torch.ones(n, dtype=dtype)
    if kind == "zeros":
        return torch.zeros(n, dtype=dtype)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    if kind == "binary":
        p = draw(st.sampled_from([0.1, 0.5, 0.9]))
        return (u < p).to(dtype)
    if kind == "uniform":
        return u.to(dtype)
    return torch.where(u < 0.4, 0.0, torch.where(u > 0.6, 1.0, (u - 0.4) * 5)).to(dtype)  # extremes


@st.composite
def binary_edge_sets(draw, graph: ComponentGraph) -> set[tuple[str, str]]:
    """A set of (writer, reader) edges of `graph`: empty, full, or each edge kept with probability p."""
    p = draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    keep = torch.rand(graph.num_edges, generator=gen) < p
    return {edge for edge, k in zip(graph.edges, keep.tolist(), strict=True) if k}


def edge_set_mask(graph: ComponentGraph, edges, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Binary mask (num_edges,) of an edge set."""
    mask = torch.zeros(graph.num_edges, dtype=dtype)
    mask[graph.index_of(sorted(edges, key=graph.edge_index.__getitem__))] = 1
    return mask


# ----- inputs -----------------------------------------------------------------------------------------------
@st.composite
def token_batches(draw, vocab_size: int, max_len: int, min_batch: int = 1, max_batch: int = 4,
                  first_token: int | None = None, ragged: bool = False):
    """(ids, corrupted_ids, attention_mask), each (B, T): random tokens, right padding, >= 1 real token a row.

    T is the longest row; padded positions hold random tokens too (they must not matter). `ragged=True`
    always pads: at least two rows, the first of length T >= 2 and the last shorter. `first_token`, when
    given, is put at position 0 of every row of both batches (e.g. a BOS id)."""
    if ragged:
        if max_len < 2:
            raise ValueError("a ragged batch needs max_len >= 2")
        batch = draw(st.integers(max(2, min_batch), max(2, max_batch)))
        seq = draw(st.integers(2, max_len))
        middle = draw(st.lists(st.integers(1, seq), min_size=batch - 2, max_size=batch - 2))
        lengths = [seq, *middle, draw(st.integers(1, seq - 1))]
    else:
        batch = draw(st.integers(min_batch, max_batch))
        lengths = draw(st.lists(st.integers(1, max_len), min_size=batch, max_size=batch))
        seq = max(lengths)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    ids = torch.randint(0, vocab_size, (batch, seq), generator=gen)
    corrupted = torch.randint(0, vocab_size, (batch, seq), generator=gen)
    if first_token is not None:
        ids[:, 0] = corrupted[:, 0] = first_token
    mask = (torch.arange(seq)[None] < torch.tensor(lengths)[:, None]).long()
    return ids, corrupted, mask


# ----- RASP programs ----------------------------------------------------------------------------------------
MAPS = ("lambda x: x + 1", "lambda x: x - 1", "lambda x: x % 2", "lambda x: min(x, 1)",
        "lambda x: int(x > 1)", "lambda x: 2 - x")
SEQUENCE_MAPS = ("lambda x, y: x + y", "lambda x, y: int(x == y)", "lambda x, y: max(x, y)",
                 "lambda x, y: (x + y) % 3", "lambda x, y: x - y")
BINARY_MAPS = ("lambda x: int(x == 1)", "lambda x: int(x > 0)", "lambda x: x % 2", "lambda x: int(x < 2)")
COMPARISONS = ("EQ", "LT", "LEQ", "GT", "GEQ", "NEQ", "TRUE")
LEAVES = ("rasp.tokens", "rasp.indices")


@dataclass(frozen=True)
class RaspProgram:
    """A generated RASP program: `source` is a Python expression over `rasp` (tracr.rasp.rasp) that builds it.

    Its repr is that source with the compile settings, so a failing example prints a program one can paste.
    """

    source: str
    vocab: tuple
    max_seq_len: int
    causal: bool = False

    def __repr__(self) -> str:
        return (f"RaspProgram({self.source!r}, vocab={self.vocab!r}, max_seq_len={self.max_seq_len}"
                + (", causal=True)" if self.causal else ")"))

    def build(self):
        """The RASP expression (imports tracr)."""
        from tracr.rasp import rasp

        return eval(self.source, {"rasp": rasp})  # noqa: S307 - our own generated source

    def compile(self):
        """Compile with tracr (`epverify.tracr.compile_rasp`, which attaches the default dataset recipe).

        Raises EpverifyError when tracr cannot compile the program."""
        from ..tracr.compile import compile_rasp

        return compile_rasp(self.build(), list(self.vocab), self.max_seq_len, causal=self.causal, name="generated",
                            source=self.source)


def _categorical(depth: int) -> st.SearchStrategy:
    """Source of a categorical SOp of nesting depth <= depth."""
    leaves = st.sampled_from(LEAVES)
    if depth <= 0:
        return leaves
    return st.one_of(leaves, _categorical_op(depth))


def _categorical_op(depth: int) -> st.SearchStrategy:
    """A categorical SOp that is not a leaf (depth >= 1). Aggregates only move one value per query (tracr's
    categorical aggregates cannot average): either the selector matches indices to one query position, or it
    matches equal keys and the value is a function of the key."""
    sub = _categorical(depth - 1)
    select = _select(depth - 1)
    leaves = st.sampled_from(LEAVES)
    return st.one_of(
        st.builds(lambda f, x: f"rasp.Map({f}, {x})", st.sampled_from(MAPS), sub),
        st.builds(lambda f, x, y: f"rasp.SequenceMap({f}, {x}, {y})", st.sampled_from(SEQUENCE_MAPS),
                  sub, sub),
        st.builds(lambda s: f"rasp.SelectorWidth({s})", select),
        st.builds(lambda q, v: f"rasp.Aggregate(rasp.Select(rasp.indices, {q}, rasp.Comparison.EQ), {v})",
                  sub, sub),
        st.builds(lambda k, q, f: f"rasp.Aggregate(rasp.Select({k}, {q}, rasp.Comparison.EQ), "
                                  + (k if f is None else f"rasp.Map({f}, {k})") + ")",
                  leaves, sub, st.none() | st.sampled_from(MAPS)),
    )


def _select(depth: int) -> st.SearchStrategy:
    sub = _categorical(depth)
    return st.builds(lambda k, q, c: f"rasp.Select({k}, {q}, rasp.Comparison.{c})", sub, sub,
                     st.sampled_from(COMPARISONS))


def _numerical(depth: int) -> st.SearchStrategy:
    """A numerical output: a 0/1 function of a categorical SOp, or its mean over a selector."""
    binary = st.builds(lambda f, x: f"rasp.numerical(rasp.Map({f}, {x}))", st.sampled_from(BINARY_MAPS),
                       _categorical(depth - 1))
    return st.one_of(binary, st.builds(lambda s, b: f"rasp.numerical(rasp.Aggregate({s}, {b}, default=0))",
                                       _select(depth - 1), binary))


@st.composite
def rasp_programs(draw, max_depth: int = 2, vocabs=((0, 1), (0, 1, 2), (1, 2, 3)), max_seq_lens=(3, 4),
                  causal: bool = False) -> RaspProgram:
    """RASP programs over small integer vocabularies from Map, SequenceMap, Select, Aggregate (categorical
    and numerical) and SelectorWidth, nested at most `max_depth` operations deep; never a bare input.

    Some programs are beyond tracr (compile raises EpverifyError): skip those with `assume`."""
    depth = draw(st.integers(1, max_depth))
    source = draw(st.one_of(_categorical_op(depth), _numerical(depth)))
    return RaspProgram(source, draw(st.sampled_from(vocabs)), draw(st.sampled_from(max_seq_lens)), causal)


__all__ = [
    "FAMILIES",
    "HF_FAMILIES",
    "RaspProgram",
    "TracrShape",
    "binary_edge_sets",
    "build_model",
    "edge_masks",
    "edge_set_mask",
    "hf_configs",
    "model_configs",
    "rasp_programs",
    "token_batches",
    "tracr_models",
    "tracr_shapes",
]
