"""A trained model with a known circuit: its card, its alignment to the compiled program, its vocabulary and data.

`trained_models/<name>/` holds a Hugging Face checkpoint (config.json, model.safetensors, the tokenizer files) and
`card.json` (docs/design.md, "Names and files"; docs/ground_truth.md, "Trained models"):

    {"format": "epverify.trained/1", "name", "program": <causal zoo program>, "family": "gpt2" | "llama",
     "alignment": {program component -> model component}, "tokens": {...},
     "ground_truth": {ablation -> {"edges": [[w, r], ...], checks ...}}, "checks": {...}, "training": {...},
     "dataset": <the program's recipe>}

The alignment maps the program's writers (embeddings, heads, MLPs) and readers (q/k/v inputs, MLP inputs, the
output) to the model's. The model reads a program output at position t as its next-token logits there over the
output values' tokens (a position where the program has no value, RASP's None, as the token `None`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.dataset import PruneData
from ..errors import EpverifyError
from ..tracr.data import dataset
from ..tracr.model import BOS, PAD, CompiledModel

FORMAT = "epverify.trained/1"
CARD = "card.json"
ROOT = Path(__file__).resolve().parents[2] / "trained_models"
NONE_TOKEN = "None"
CHECKED_ABLATIONS = ("interchange", "zero")


@dataclass(frozen=True)
class Vocabulary:
    """The model's tokens for the program's inputs and outputs, and the ids of BOS and PAD."""

    token_of_input: dict  # program input value -> model token id
    output_tokens: list[int]  # model token id of each output value, in the program's order; then None's
    bos: int
    pad: int

    def encode(self, compiled: CompiledModel, sequences: list[list]) -> tuple[torch.Tensor, torch.Tensor]:
        """Model token ids (B, 1 + longest) and attention mask for program inputs, as `CompiledModel.encode`."""
        ids, mask = compiled.encode(sequences)
        table = torch.full((max(compiled.input_encoding.values()) + 1,), self.pad, dtype=torch.long)
        for value, index in compiled.input_encoding.items():
            table[index] = self.bos if value == BOS else self.pad if value == PAD else self.token_of_input[value]
        return table[ids], mask

    def target_tokens(self, decisions: torch.Tensor) -> torch.Tensor:
        """Model token ids of the program's decisions (an output value's index, or -1 for None)."""
        table = torch.tensor(self.output_tokens)
        return table[decisions.clamp(min=-1)]  # -1 indexes the last entry: None's token

    def to_dict(self) -> dict:
        return {"inputs": [[v, t] for v, t in self.token_of_input.items()], "outputs": self.output_tokens,
                "bos": self.bos, "pad": self.pad}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        return cls({v: t for v, t in d["inputs"]}, list(d["outputs"]), int(d["bos"]), int(d["pad"]))


def token_name(value) -> str:
    """The token a program value is written as: `True`, `3`, `a`."""
    return str(value)


def writer_map(compiled: CompiledModel, family: str, head_of: list[int]) -> dict[str, str]:
    """Program writer -> model writer: embeddings, head i of a layer -> head head_of[i], MLP l -> MLP l."""
    embeds = {"tok_embeds": "tok_embeds", "pos_embeds": "pos_embeds"} if family == "gpt2" else \
        {"tok_embeds": "embeds"}
    out = dict(embeds)
    for layer in range(compiled.n_layers):
        for head in range(compiled.n_heads):
            out[f"a{layer}.h{head}"] = f"a{layer}.h{head_of[head]}"
        out[f"m{layer}"] = f"m{layer}"
    return out


def reader_map(compiled: CompiledModel, head_of: list[int], group: int) -> dict[str, str]:
    """Program reader -> model reader; a model key/value reader serves `group` query heads (grouped KV)."""
    out = {"resid_post": "resid_post"}
    for layer in range(compiled.n_layers):
        for head in range(compiled.n_heads):
            mine = head_of[head]
            out[f"a{layer}.h{head}.q"] = f"a{layer}.h{mine}.q"
            out[f"a{layer}.h{head}.k"] = f"a{layer}.h{mine // group}.k"
            out[f"a{layer}.h{head}.v"] = f"a{layer}.h{mine // group}.v"
        out[f"m{layer}"] = f"m{layer}"
    return out


def map_edges(edges, alignment: dict[str, str]) -> list[tuple[str, str]]:
    """The model's edges for program edges; an edge whose writer has no counterpart cannot be mapped."""
    out = []
    for w, r in edges:
        if w not in alignment or r not in alignment:
            raise EpverifyError(f"program edge [{w!r}, {r!r}] has no counterpart in the model (alignment: "
                                f"{', '.join(sorted(alignment))})")
        out.append((alignment[w], alignment[r]))
    return out


@dataclass
class Card:
    """A shipped trained model's card.json, loaded and checked against the model's graph."""

    path: Path
    data: dict

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def program(self) -> str:
        return self.data["program"]

    def truth(self, ablation: str) -> list[tuple[str, str]]:
        entry = self.data["ground_truth"].get(ablation)
        if entry is None:
            raise EpverifyError(f"{self.path / CARD} has no ground truth for {ablation} ablation (it has"
                                f" {', '.join(self.data['ground_truth'])})")
        return [(str(w), str(r)) for w, r in entry["edges"]]

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_dict(self.data["tokens"])

    def compiled(self) -> CompiledModel:
        from ..tracr import load

        return load(self.program)

    def prune_data(self) -> PruneData:
        """The card's dataset as training data: the program's recipe, every real position after BOS scored."""
        compiled, vocab = self.compiled(), self.vocabulary()
        clean, corrupted = dataset(self.data["dataset"])
        ids, mask = vocab.encode(compiled, clean)
        corrupted_ids, _ = vocab.encode(compiled, corrupted)
        loss_mask = mask.bool().clone()
        loss_mask[:, 0] = False
        return PruneData(ids, mask, loss_mask, corrupted_ids)


def is_trained_dir(path: str | Path) -> bool:
    return (Path(path) / CARD).is_file()


def load_card(path: str | Path, graph=None) -> Card:
    """Read `path/card.json`; with the model's graph, refuse a card whose circuits name edges the model lacks."""
    path = Path(path)
    file = path / CARD
    if not file.is_file():
        raise EpverifyError(f"{path} is not a trained model with a known circuit: expected {CARD} there")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EpverifyError(f"{file} is not valid JSON ({err}): rebuild it with `make trained`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EpverifyError(f"{file} is not an epverify trained-model card (expected \"format\": \"{FORMAT}\")")
    missing = [k for k in ("name", "program", "family", "ground_truth", "tokens", "dataset") if k not in data]
    if missing:
        raise EpverifyError(f"{file} lacks {', '.join(missing)}: rebuild it with `make trained`")
    card = Card(path, data)
    if graph is not None:
        for ablation in data["ground_truth"]:
            unknown = [e for e in card.truth(ablation) if e not in graph.edge_index]
            if unknown:
                w, r = unknown[0]
                raise EpverifyError(f"{file}: the {ablation} circuit names the edge [{w!r}, {r!r}], which the model"
                                    f" in {path} does not have ({len(unknown)} such edges): the card belongs to"
                                    " another model")
    return card


def shipped() -> list[Path]:
    """Every shipped trained model with a card."""
    return sorted(p for p in ROOT.iterdir() if is_trained_dir(p)) if ROOT.is_dir() else []
