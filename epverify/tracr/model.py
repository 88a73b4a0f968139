"""A Tracr program compiled to weights, as plain torch tensors plus the metadata to use it. No JAX needed.

Files in `compiled_models/<name>/`: `weights.safetensors` and `model.json` (vocab, max_seq_len, residual labels,
input and output encodings, the program's source, the dataset recipe and the ground-truth circuits).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..core.graph import count_edges
from ..errors import EpverifyError

FORMAT = "epverify.tracr/1"
BOS, PAD = "compiler_bos", "compiler_pad"


@dataclass
class CompiledModel:
    """Weights of a compiled RASP program and what is needed to feed and read it.

    Layer l is tracr's `layer_l`: attention (heads of key size `key_size`) then an MLP. The unembedding is a
    projection of the residual onto the output directions: for a categorical output these are logits over the
    output values (argmax decodes); for a numerical output, one value.
    """

    name: str
    weights: dict[str, torch.Tensor]
    vocab: list
    max_seq_len: int
    causal: bool
    residual_labels: list[str]
    input_encoding: dict  # token value -> id (BOS and PAD included)
    output_values: list | None  # categorical: index -> value; numerical: None
    n_layers: int
    n_heads: int
    key_size: int
    source: str = ""
    dataset: dict = field(default_factory=dict)
    ground_truth: dict = field(default_factory=dict)  # ablation -> {"edges": [...], "dropped": [...]}
    # a balanced recipe's inputs, once labelled (`tracr.data.clean_inputs`): the ground truth and recovery share them
    balanced_inputs: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # ----- shape ---------------------------------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        return self.weights["token_embed"].shape[1]

    @property
    def categorical(self) -> bool:
        return self.output_values is not None

    @property
    def total_edges(self) -> int:
        """Edges of its component graph: embeddings `tok_embeds` and `pos_embeds`, no grouped keys and values."""
        return count_edges(self.n_layers, self.n_heads, self.n_heads, 2)

    # ----- encoding --------------------------------------------------------------------------------------------
    def encode(self, sequences: list[list]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, 1 + longest) with BOS first and PAD after, and the attention mask (1 = real)."""
        if not sequences:
            raise EpverifyError(f"{self.name}: no input sequences given; pass at least one")
        longest = max(len(s) for s in sequences)
        pad, encoding = self.input_encoding[PAD], self.input_encoding
        rows, lengths = [], []
        for seq in sequences:
            if len(seq) > self.max_seq_len:
                raise EpverifyError(
                    f"{self.name}: input of length {len(seq)} is longer than max_seq_len {self.max_seq_len};"
                    " shorten it or compile the program with a larger max_seq_len"
                )
            for token in seq:
                if token in (BOS, PAD) or token not in encoding:
                    raise EpverifyError(
                        f"{self.name}: token {token!r} is not in the vocabulary {sorted(map(str, self.vocab))}"
                    )
            row = [encoding[BOS], *(encoding[token] for token in seq)]
            rows.append(row + [pad] * (longest - len(seq)))
            lengths.append(len(seq) + 1)
        ids = torch.tensor(rows, dtype=torch.long)
        mask = (torch.arange(longest + 1)[None] < torch.tensor(lengths)[:, None]).long()
        return ids, mask

    def decode(self, outputs: torch.Tensor, attention_mask: torch.Tensor) -> list[list]:
        """Decoded outputs per real position after BOS: argmax values (categorical; None where no output
        direction reaches 1/2, RASP's undefined value) or floats rounded to 4 digits (numerical)."""
        lengths = (attention_mask.sum(1) - 1).tolist()
        return [self.decode_positions(outputs[row, 1 : n + 1]) for row, n in enumerate(lengths)]

    def decode_positions(self, outputs: torch.Tensor) -> list:
        """The decoded value of each row of `outputs` (P, V): one position's output each."""
        if self.categorical:
            return [self.output_values[i] if v >= 0.5 else None
                    for i, v in zip(outputs.argmax(-1).tolist(), outputs.amax(-1).tolist())]
        return [round(v, 4) for v in outputs[:, 0].tolist()]

    # ----- files -----------------------------------------------------------------------------------------------
    def metadata(self) -> dict:
        return {
            "format": FORMAT,
            "name": self.name,
            "source": self.source,
            "vocab": self.vocab,
            "max_seq_len": self.max_seq_len,
            "causal": self.causal,
            "bos": BOS,
            "pad": PAD,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "key_size": self.key_size,
            "d_model": self.d_model,
            "residual_labels": self.residual_labels,
            "input_encoding": [[k, v] for k, v in self.input_encoding.items()],
            "output_encoding": (
                {"kind": "categorical", "values": self.output_values}
                if self.categorical
                else {"kind": "numerical"}
            ),
            "dataset": self.dataset,
            "ground_truth": self.ground_truth,
        }

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.weights.items()}, str(directory / "weights.safetensors"))
        tmp = directory / "model.json.tmp"
        tmp.write_text(json.dumps(self.metadata(), indent=1) + "\n")
        tmp.replace(directory / "model.json")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> CompiledModel:
        directory = Path(directory)
        meta_path, weight_path = directory / "model.json", directory / "weights.safetensors"
        if not meta_path.is_file() or not weight_path.is_file():
            raise EpverifyError(
                f"{directory} is not a compiled model: expected model.json and weights.safetensors in it"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise EpverifyError(f"{meta_path} is not valid JSON ({err}); rebuild it with `make zoo`") from None
        if meta.get("format") != FORMAT:
            raise EpverifyError(f"{meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}")
        out = meta["output_encoding"]
        return cls(
            name=meta["name"],
            weights=load_file(str(weight_path)),
            vocab=meta["vocab"],
            max_seq_len=meta["max_seq_len"],
            causal=meta["causal"],
            residual_labels=meta["residual_labels"],
            input_encoding={k: v for k, v in meta["input_encoding"]},
            output_values=out.get("values") if out["kind"] == "categorical" else None,
            n_layers=meta["n_layers"],
            n_heads=meta["n_heads"],
            key_size=meta["key_size"],
            source=meta.get("source", ""),
            dataset=meta.get("dataset", {}),
            ground_truth=meta.get("ground_truth", {}),
        )

    def attention_scale(self) -> float:
        return 1.0 / math.sqrt(self.key_size)
