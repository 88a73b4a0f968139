"""A trained model with a known mechanism: a two-layer attention-only transformer that does induction.

Task: sequences `[BOS, x1..xn, x1..xn]` of distinct random tokens, with n drawn per sequence; at the second
copy of x_i the model must predict x_{i+1}. Because n varies, the answer's position is not a function of the
query's position alone: the model has to find the earlier occurrence of the current token and copy what
followed it. The textbook way to do that is a previous-token head in layer 0 (each position writes the token
before it) that a layer-1 induction head reads through its key (K-composition): the induction head's query is
the current token, its key is "the token before me" and its value the token itself.

The model is a Hugging Face LlamaForCausalLM (so the Llama adapter runs it unchanged; rotary positions, so no
absolute position can stand in for induction) whose MLP weights are zero and were frozen during training:
every MLP writes exactly 0, so the model is attention-only and every edge into or out of an MLP is inert. Its
one embedding writer is `embeds`. `scripts/train_induction.py` trains it, finds which head is which from
attention patterns, and writes `trained_models/induction/` (weights via `save_pretrained` and
`induction.json` with the heads, their scores, the measured accuracy and the data recipe used here).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core.dataset import PruneData
from ..errors import EpverifyError
from ..train import PruneConfig

ROOT = Path(__file__).resolve().parents[2] / "trained_models" / "induction"
META = "induction.json"

# Edge Pruning settings for this model (46 edges): the Tracr recovery schedule, shortened. On 256 held-out
# examples (seed 1) it keeps 18 edges, the key edge among them (bench/compare.py, seed 0).
PRUNE_CONFIG = PruneConfig(target_sparsity=1.02, steps=300, warmup_steps=150, lr=0.1, lambda_lr=0.01,
                           batch_size=64)


def sequences(n_examples: int, vocab_size: int, min_len: int, max_len: int, seed: int,
              bos_id: int, pad_id: int) -> dict[str, torch.Tensor]:
    """A seeded batch of repeated sequences, each with a corrupted partner of the same shape.

    The corrupted partner is [BOS, y_1..y_2n]: 2n distinct random tokens, no repeat, so nothing in it can be
    predicted by induction and the induction head's attention on it goes elsewhere. (A repeated corrupted
    sequence of the same n would put the induction head's attention on the same positions as the clean one:
    then the query and key paths could both be ablated together without changing anything.) Clean and
    corrupted tokens come from separate generators, so the clean stream does not depend on the corruption.

    Returns input_ids, corrupted_ids, attention_mask (N, 1 + 2 max_len), loss_mask: True at the second copy of
    x_1..x_{n-1} (the positions whose next token is fixed by induction), and the lengths n (N,).
    """
    if 2 * max_len > vocab_size:
        raise EpverifyError(f"vocab_size {vocab_size} is too small for corrupted sequences of {2 * max_len}"
                            " distinct tokens: use a vocabulary of at least 2 max_len")
    gen = torch.Generator().manual_seed(seed)
    corrupt_gen = torch.Generator().manual_seed(seed + 1_000_003)
    width = 1 + 2 * max_len
    ids = torch.full((n_examples, width), pad_id, dtype=torch.long)
    corrupted = ids.clone()
    mask = torch.zeros_like(ids)
    loss_mask = torch.zeros(n_examples, width, dtype=torch.bool)
    lengths = torch.randint(min_len, max_len + 1, (n_examples,), generator=gen)
    for row, n in enumerate(lengths.tolist()):
        x = torch.randperm(vocab_size, generator=gen)[:n]
        ids[row, 0] = corrupted[row, 0] = bos_id
        ids[row, 1 : n + 1] = x
        ids[row, n + 1 : 2 * n + 1] = x
        corrupted[row, 1 : 2 * n + 1] = torch.randperm(vocab_size, generator=corrupt_gen)[: 2 * n]
        mask[row, : 2 * n + 1] = 1
        loss_mask[row, n + 1 : 2 * n] = True  # second copy of x_1..x_{n-1}: predict x_2..x_n
    return {"input_ids": ids, "corrupted_ids": corrupted, "attention_mask": mask, "loss_mask": loss_mask,
            "lengths": lengths}


def load_meta(path: str | Path = ROOT) -> dict:
    """The shipped model's description: heads, scores, accuracy and the data recipe."""
    path = Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        raise EpverifyError(
            f"no trained induction model at {path}: expected {META} there; build it with"
            " `python scripts/train_induction.py`"
        )
    return json.loads(meta_path.read_text())


def load(path: str | Path = ROOT):
    """The shipped induction model, wrapped (a MaskedModel), and its description."""
    from ..adapters import wrap_pretrained

    meta = load_meta(path)
    return wrap_pretrained(path), meta


def data(meta: dict, n_examples: int = 256, seed: int = 1) -> PruneData:
    """Evaluation data for the shipped model from its recipe (seed 0 is the training stream; use another)."""
    recipe = meta["data"]
    batch = sequences(n_examples, recipe["vocab_size"], recipe["min_len"], recipe["max_len"], seed,
                      recipe["bos_id"], recipe["pad_id"])
    return PruneData(batch["input_ids"], batch["attention_mask"], batch["loss_mask"], batch["corrupted_ids"])


def targets(input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """The token each loss position must predict (its next token), at the loss positions: (P,)."""
    nxt = torch.roll(input_ids, -1, dims=1)
    return nxt[loss_mask]
