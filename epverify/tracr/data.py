"""Datasets for compiled programs: clean inputs and, for interchange ablation, same-length corrupted partners."""

from __future__ import annotations

import itertools
import random

EXHAUSTIVE_LIMIT = 1500  # enumerate every input when the domain is at most this large
SAMPLE_SIZE = 1000


def default_recipe(vocab: list, max_seq_len: int, unique: bool = False, seed: int = 0) -> dict:
    """How a program's dataset is made; stored in model.json so the dataset can be rebuilt exactly."""
    return {"lengths": [1, max_seq_len], "unique": unique, "seed": seed,
            "exhaustive_limit": EXHAUSTIVE_LIMIT, "sample_size": SAMPLE_SIZE, "vocab": list(vocab)}


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


def clean_inputs(recipe: dict) -> list[list]:
    """Every input of the domain when it is small, else a seeded sample without repeats."""
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
    seen, out = set(), []
    while len(out) < recipe["sample_size"]:
        n = rng.choice(list(lengths))
        s = tuple(rng.sample(vocab, n)) if unique else tuple(rng.choice(vocab) for _ in range(n))
        if s not in seen:
            seen.add(s)
            out.append(list(s))
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


def dataset(recipe: dict) -> tuple[list[list], list[list]]:
    clean = clean_inputs(recipe)
    return clean, corrupted_partners(clean, recipe)
