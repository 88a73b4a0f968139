"""The shipped programs: tracr library programs, and the paper's two settings exactly.

Each entry builds a RASP program; `python -m epverify.tracr.build` compiles them all, computes their ground truth
and writes `compiled_models/<name>/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "compiled_models"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    make: Callable  # () -> RASP SOp (imports tracr)
    vocab: tuple
    max_seq_len: int
    source: str
    unique: bool = False  # dataset: only inputs with distinct tokens (programs that assume unique keys)
    causal: bool = False
    balance: bool = False  # dataset: balance the program's output at the last position (a rare branch; data.py)


def _lib():
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib, rasp


def _reverse():
    lib, rasp = _lib()
    return lib.make_reverse(rasp.tokens)


def _xproportion():
    lib, rasp = _lib()
    return lib.make_frac_prevs(rasp.tokens == "x")


def _length():
    lib, _ = _lib()
    return lib.make_length()


def _hist():
    lib, _ = _lib()
    return lib.make_hist()


def _sort_unique():
    lib, rasp = _lib()
    return lib.make_sort_unique(rasp.tokens, rasp.tokens)


def _sort():
    lib, rasp = _lib()
    return lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=4, min_key=1)


def _sort_freq():
    lib, _ = _lib()
    return lib.make_sort_freq(max_seq_len=4)


def _pair_balance():
    lib, rasp = _lib()
    return lib.make_pair_balance(rasp.tokens, "(", ")")


def _shuffle_dyck():
    lib, _ = _lib()
    return lib.make_shuffle_dyck(pairs=["()"])


def _shuffle_dyck2():
    lib, _ = _lib()
    return lib.make_shuffle_dyck2()


def _count_less_freq():
    lib, _ = _lib()
    return lib.make_count_less_freq(n=2)


def _shift_by():
    lib, rasp = _lib()
    return lib.shift_by(2, rasp.tokens)


def _detect_pattern():
    lib, rasp = _lib()
    return lib.detect_pattern(rasp.tokens, "abc")


def _count():
    lib, rasp = _lib()
    return lib.make_count(rasp.tokens, "a")


def _frac_prevs_causal():
    lib, rasp = _lib()
    return lib.make_frac_prevs(rasp.tokens == "a")


def _sum_neighbours():
    lib, rasp = _lib()
    prev = lib.shift_by(1, rasp.tokens)
    return lib.make_nary_sequencemap(lambda x, y: (x + y) % 4, rasp.tokens, prev)


def _shift_by_one():
    lib, rasp = _lib()
    return lib.shift_by(1, rasp.tokens)


def _first_token():
    _, rasp = _lib()
    first = rasp.Select(rasp.indices, rasp.indices, lambda key, query: key == 0)
    return rasp.categorical(rasp.Aggregate(first, rasp.tokens))


def _detect_ab():
    lib, rasp = _lib()
    return lib.detect_pattern(rasp.tokens, "ab")


def _count_parity():
    lib, rasp = _lib()
    return rasp.categorical(rasp.numerical(rasp.Map(lambda c: c % 2, lib.make_count(rasp.tokens, "a"))))


def _open_exceeds_close():
    lib, rasp = _lib()
    return rasp.categorical(rasp.Map(lambda x: x > 0, lib.make_pair_balance(rasp.tokens, "(", ")")))


LIB = "tracr.compiler.lib"
# Compiled with causal attention, as a Hugging Face decoder attends: what each program computes at a position is
# then what it computes on the prefix up to it. The trained models with known circuits (epverify.trained) learn
# these.
CAUSAL: tuple[ZooEntry, ...] = (
    ZooEntry("count_causal", _count, ("a", "b", "c"), 5, f'{LIB}.make_count(tokens, "a"), compiled causal',
             causal=True),
    ZooEntry("hist_causal", _hist, ("a", "b", "c"), 5, f"{LIB}.make_hist(), compiled causal", causal=True),
    ZooEntry("count_parity_causal", _count_parity, ("a", "b", "c"), 5,
             f'Map(c % 2, {LIB}.make_count(tokens, "a")), compiled causal', causal=True),
    ZooEntry("open_exceeds_close_causal", _open_exceeds_close, ("(", ")", "a"), 5,
             f'Map(x > 0, {LIB}.make_pair_balance(tokens, "(", ")")), compiled causal', causal=True),
    ZooEntry("shift_by_one_causal", _shift_by_one, ("a", "b", "c"), 5, f"{LIB}.shift_by(1, tokens), compiled causal",
             causal=True),
    ZooEntry("first_token_causal", _first_token, ("a", "b", "c"), 5,
             "Aggregate(Select(indices, indices, key == 0), tokens), compiled causal", causal=True),
    ZooEntry("detect_ab_causal", _detect_ab, ("a", "b", "c"), 5, f'{LIB}.detect_pattern(tokens, "ab"), compiled'
             " causal", causal=True),
    ZooEntry("detect_pattern_causal", _detect_pattern, ("a", "b", "c"), 5,
             f'{LIB}.detect_pattern(tokens, "abc"), compiled causal', causal=True),
    ZooEntry("sum_neighbours_causal", _sum_neighbours, (0, 1, 2, 3), 4,
             f"{LIB}.make_nary_sequencemap(lambda x, y: (x + y) % 4, tokens, shift_by(1, tokens)), compiled causal",
             causal=True),
    ZooEntry("shuffle_dyck_causal", _shuffle_dyck, ("(", ")"), 5, f'{LIB}.make_shuffle_dyck(pairs=["()"]),'
             " compiled causal", causal=True),
)
ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("reverse", _reverse, (1, 2, 3), 5, f"{LIB}.make_reverse(tokens)  [paper setting]"),
    ZooEntry("xproportion", _xproportion, ("a", "b", "c", "x"), 5,
             f'{LIB}.make_frac_prevs(tokens == "x")  [paper setting]'),
    ZooEntry("length", _length, ("a", "b", "c"), 5, f"{LIB}.make_length()"),
    ZooEntry("hist", _hist, ("a", "b", "c"), 5, f"{LIB}.make_hist()"),
    ZooEntry("sort_unique", _sort_unique, (1, 2, 3, 4, 5), 4, f"{LIB}.make_sort_unique(tokens, tokens)",
             unique=True),
    ZooEntry("sort", _sort, (1, 2, 3), 4, f"{LIB}.make_sort(tokens, tokens, max_seq_len=4, min_key=1)"),
    ZooEntry("sort_freq", _sort_freq, ("a", "b", "c"), 4, f"{LIB}.make_sort_freq(max_seq_len=4)"),
    ZooEntry("pair_balance", _pair_balance, ("(", ")", "a"), 5, f'{LIB}.make_pair_balance(tokens, "(", ")")'),
    ZooEntry("shuffle_dyck", _shuffle_dyck, ("(", ")"), 5, f'{LIB}.make_shuffle_dyck(pairs=["()"])'),
    ZooEntry("shuffle_dyck2", _shuffle_dyck2, ("(", ")", "{", "}"), 4, f"{LIB}.make_shuffle_dyck2()"),
    ZooEntry("count_less_freq", _count_less_freq, ("a", "b", "c"), 4, f"{LIB}.make_count_less_freq(n=2)"),
    ZooEntry("shift_by", _shift_by, ("a", "b", "c"), 5, f"{LIB}.shift_by(2, tokens)"),
    ZooEntry("detect_pattern", _detect_pattern, ("a", "b", "c"), 5, f'{LIB}.detect_pattern(tokens, "abc")'),
    ZooEntry("count", _count, ("a", "b", "c"), 5, f'{LIB}.make_count(tokens, "a")'),
    ZooEntry("frac_prevs_causal", _frac_prevs_causal, ("a", "b"), 5,
             f'{LIB}.make_frac_prevs(tokens == "a"), compiled causal', causal=True),
    ZooEntry("sum_neighbours", _sum_neighbours, (0, 1, 2, 3), 4,
             f"{LIB}.make_nary_sequencemap(lambda x, y: (x + y) % 4, tokens, shift_by(1, tokens))"),
)

ZOO = ZOO + CAUSAL
BY_NAME = {entry.name: entry for entry in ZOO}


def names() -> list[str]:
    return [entry.name for entry in ZOO]
