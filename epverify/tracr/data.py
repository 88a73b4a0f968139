"""Datasets for compiled programs: clean inputs and, for interchange ablation, same-length corrupted partners.

A small domain is enumerated whole. A large one is sampled (seeded, without repeats), uniformly, or, where the
recipe says `balance`, balanced over the program's output at the last position: a pool of `BALANCE_POOL` times the
sample size is drawn uniformly, the compiled model labels it, and the sample takes one input of each output value
in turn (in a seeded order) until it is full, repeating the inputs of a value the pool holds few of. A branch that
uniform inputs almost never reach (all tokens equal, a balanced bracket string) then fires in 1/k of the sample for
k output values, as long as the pool holds it at all.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict

EXHAUSTIVE_LIMIT = 1500  # enumerate every input when the domain is at most this large
SAMPLE_SIZE = 1000
BALANCE_POOL = 50  # a balanced sample is drawn from this many times its size of uniform inputs


def default_recipe(vocab: list, max_seq_len: int, unique: bool = False, seed: int = 0,
                   balance: bool = False) -> dict:
    """How a program's dataset is made; stored in model.json so the dataset can be rebuilt exactly."""
    recipe = {"lengths": [1, max_seq_len], "unique": unique, "seed": seed,
              "exhaustive_limit": EXHAUSTIVE_LIMIT, "sample_size": SAMPLE_SIZE, "vocab": list(vocab)}
    if balance:
        recipe["balance"] = {"by": "output at the last position", "pool": BALANCE_POOL}
    return recipe


def _domain_size(vocab: list, lengths: range, unique: bool) -> int:
    total = 0
    for n in lengths:
        if unique:
            total += 0 if n > len(vocab) else _perm(len(vocab), n)
        else:
            total += len(vocab) ** n
    return total


def _perm(n: int, k: int) -> int:
    out = 1
    for i in range(k):
        out *= n - i
    return out


def clean_inputs(recipe: dict, model=None) -> list[list]:
    """Every input of the domain when it is small, else a seeded sample without repeats (balanced over the outputs
    of `model`, the compiled program, when the recipe says so)."""
    vocab = list(recipe["vocab"])
    lo, hi = recipe["lengths"]
    lengths = range(lo, hi + 1)
    unique = recipe.get("unique", False)
    if _domain_size(vocab, lengths, unique) <= recipe["exhaustive_limit"]:
        out = []
        for n in lengths:
            source = itertools.permutations(vocab, n) if unique else itertools.product(vocab, repeat=n)
            out += [list(s) for s in source]
        return out
    rng = random.Random(recipe["seed"])
    if not recipe.get("balance"):
        return _sample(rng, vocab, lengths, unique, recipe["sample_size"])
    if model is None:
        raise ValueError("a balanced recipe needs the compiled model to label its pool")
    key = json.dumps(recipe, sort_keys=True)
    if key not in model.balanced_inputs:  # labelling the pool runs the model on it: once per model and recipe
        size = min(recipe["sample_size"] * recipe["balance"]["pool"], _domain_size(vocab, lengths, unique))
        pool = _sample(rng, vocab, lengths, unique, size)
        model.balanced_inputs[key] = _balanced(pool, last_outputs(model, pool), recipe["sample_size"], rng)
    return [list(s) for s in model.balanced_inputs[key]]


def _sample(rng: random.Random, vocab: list, lengths: range, unique: bool, size: int) -> list[list]:
    seen, out = set(), []
    while len(out) < size:
        n = rng.choice(list(lengths))
        s = tuple(rng.sample(vocab, n)) if unique else tuple(rng.choice(vocab) for _ in range(n))
        if s not in seen:
            seen.add(s)
            out.append(list(s))
    return out


def _balanced(pool: list[list], labels: list, size: int, rng: random.Random) -> list[list]:
    """`size` inputs of the pool, one of each label in turn (labels in a seeded order, pool order within); a label
    with fewer inputs than its share repeats them (all of the domain's "all equal" inputs may be a few dozen)."""
    groups: dict = defaultdict(list)
    for seq, label in zip(pool, labels):
        groups[repr(label)].append(seq)
    order = sorted(groups)
    rng.shuffle(order)
    out = []
    for i in range(size):
        group = groups[order[i % len(order)]]  # label i mod k, its (i // k)-th input, wrapping round
        out.append(group[(i // len(order)) % len(group)])
    return out


def last_outputs(model, sequences: list[list], chunk: int = 4096) -> list:
    """The compiled program's output at the last position of each input."""
    import torch

    from ..adapters.tracr import TracrAdapter
    from ..core import engine

    adapter, out = TracrAdapter(model), []
    for i in range(0, len(sequences), chunk):
        ids, mask = model.encode(sequences[i:i + chunk])
        last = torch.zeros_like(mask, dtype=torch.bool)
        last[torch.arange(len(ids)), mask.sum(1) - 1] = True  # the last real position of each input
        out += model.decode_positions(engine.forward(adapter, ids, mask, positions=last))
    return out


def corrupted_partners(clean: list[list], recipe: dict) -> list[list]:
    """A seeded partner of the same length for every clean input, differing from it where the domain allows."""
    rng = random.Random(recipe["seed"] + 1)
    vocab = list(recipe["vocab"])
    unique = recipe.get("unique", False)
    out = []
    for s in clean:
        for _ in range(20):
            c = rng.sample(vocab, len(s)) if unique else [rng.choice(vocab) for _ in s]
            if c != s:
                break
        out.append(c)
    return out


def dataset(recipe: dict, model=None) -> tuple[list[list], list[list]]:
    """(clean inputs, corrupted partners); `model`: the compiled program, needed by a balanced recipe."""
    clean = clean_inputs(recipe, model)
    return clean, corrupted_partners(clean, recipe)
