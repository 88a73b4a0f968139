"""RASP program -> CompiledModel, through tracr. The only module that imports JAX (lazily)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import EpverifyError
from .data import default_recipe
from .model import BOS, PAD, CompiledModel


def compile_rasp(program, vocab, max_seq_len: int, causal: bool = False, name: str | None = None,
                 source: str = "", unique: bool = False, seed: int = 0, balance: bool = False) -> CompiledModel:
    """Compile a RASP program with tracr and convert its weights to torch, with the recipe of its dataset (every
    input up to max_seq_len when that domain is small, else a seeded sample; `unique`: inputs with distinct tokens
    only; `balance`: a sample balanced over the program's output at the last position, for a branch that uniform
    inputs leave rare, see `epverify.tracr.data`), so that `epverify.recover` takes the result as it is.
    A list vocab keeps its order in the recipe.

    Raises EpverifyError for a vocab holding the BOS or PAD token, an empty vocab, a bad max_seq_len, or a program
    tracr cannot compile (naming the expression and tracr's reason).
    """
    try:
        from tracr.compiler import compiling, validating
    except ImportError:
        raise EpverifyError(
            "compiling RASP needs tracr and JAX: pip install 'epverify[tracr]' (shipped models load without them)"
        ) from None

    order = sorted(vocab, key=lambda v: (str(type(v)), v)) if isinstance(vocab, set | frozenset) else list(vocab)
    vocab = set(order)
    if not vocab:
        raise EpverifyError("the vocab is empty: give the tokens the program reads, e.g. --vocab a,b,c")
    for special in (BOS, PAD):
        if special in vocab:
            raise EpverifyError(f"the vocab contains {special!r}, which tracr reserves: remove it from the vocab")
    if not isinstance(max_seq_len, int) or max_seq_len < 1:
        raise EpverifyError(f"max_seq_len must be a positive integer, got {max_seq_len!r}")

    unsupported = validating.static_validate(program)
    if unsupported:
        first = unsupported[0]
        raise EpverifyError(
            f"tracr cannot compile expression {first.expr.label!r}: {first.reason}"
            + (f" (and {len(unsupported) - 1} more)" if len(unsupported) > 1 else "")
        )
    try:
        assembled = compiling.compile_rasp_to_model(
            program, vocab, max_seq_len, causal=causal, compiler_bos=BOS, compiler_pad=PAD
        )
    except Exception as err:  # tracr raises many kinds; the user needs the program and the reason
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EpverifyError(f"tracr could not compile program {program.label!r}: {reason}") from None
    model = _convert(assembled, program, vocab, max_seq_len, causal, name or program.label, source)
    model.dataset = default_recipe(order, max_seq_len, unique=unique, seed=seed, balance=balance)
    return model


def _convert(assembled, program, vocab, max_seq_len, causal, name, source) -> CompiledModel:
    params = assembled.params
    cfg = assembled.model_config

    def t(x) -> torch.Tensor:
        return torch.tensor(np.asarray(x), dtype=torch.float32)

    weights = {
        "token_embed": t(params["token_embed"]["embeddings"]),
        "pos_embed": t(params["pos_embed"]["embeddings"]),
    }
    for layer in range(cfg.num_layers):
        src = f"transformer/layer_{layer}/"
        for part in ("query", "key", "value", "linear"):
            p = params[src + "attn/" + part]
            if np.any(np.asarray(p["b"])):
                raise EpverifyError(f"{name}: unexpected non-zero attention bias in tracr's {part} projection")
            weights[f"layers.{layer}.{part}"] = t(p["w"])
        weights[f"layers.{layer}.mlp1_w"] = t(params[src + "mlp/linear_1"]["w"])
        weights[f"layers.{layer}.mlp1_b"] = t(params[src + "mlp/linear_1"]["b"])
        weights[f"layers.{layer}.mlp2_w"] = t(params[src + "mlp/linear_2"]["w"])
        weights[f"layers.{layer}.mlp2_b"] = t(params[src + "mlp/linear_2"]["b"])

    labels = list(assembled.residual_labels)
    categorical = type(assembled.output_encoder).__name__ == "CategoricalEncoder"
    if categorical:
        encoding = assembled.output_encoder.encoding_map  # value -> output index
        output_values = [v for v, _ in sorted(encoding.items(), key=lambda kv: kv[1])]
        columns = [labels.index(f"{program.label}:{v}") for v in output_values]
    else:
        output_values = None
        columns = [labels.index(program.label)]
    unembed = torch.zeros(len(labels), len(columns))
    for j, col in enumerate(columns):
        unembed[col, j] = 1.0
    weights["unembed"] = unembed

    return CompiledModel(
        name=name,
        weights=weights,
        vocab=sorted(vocab, key=lambda v: (str(type(v)), v)),
        max_seq_len=max_seq_len,
        causal=causal,
        residual_labels=labels,
        input_encoding=dict(assembled.input_encoder.encoding_map),
        output_values=output_values,
        n_layers=cfg.num_layers,
        n_heads=cfg.num_heads,
        key_size=cfg.key_size,
        source=source,
    )
