"""The size ladder: the zoo's kinds of program compiled at the vocabularies and lengths users write.

The shipped zoo compiles at toy sizes (3-5 tokens, lengths 4-6). A rung here is one of its kinds at a vocabulary
of up to 26 tokens and a length of up to 10; rungs are compiled on demand (`python bench/ladder.py`), never shipped,
and `build` gives them the same verified ground truth as the zoo's. Rungs whose interesting output is rare under
uniformly drawn inputs set `balance`: their dataset balances the program's output at the last position
(`epverify.tracr.data`), and the ground truth is checked on that same dataset.
"""

from __future__ import annotations

import string
from functools import partial

from .zoo import LIB, ZooEntry, _count, _hist, _lib, _reverse, _shift_by, _shuffle_dyck2, _sort_unique

LETTERS = tuple(string.ascii_lowercase)


def _all_equal():
    """Are all tokens equal? The count of tokens equal to this one (hist) against the length: true at every
    position exactly when every token is the same; under uniform inputs over 11 tokens at length 9, one input in
    11^8."""
    lib, rasp = _lib()
    return rasp.categorical(rasp.SequenceMap(lambda h, n: h == n, lib.make_hist(), lib.make_length()))


def _detect(pattern: str):
    lib, rasp = _lib()
    return lib.detect_pattern(rasp.tokens, pattern)


def _rung(kind: str, make, vocab: tuple, length: int, source: str, **kw) -> ZooEntry:
    return ZooEntry(f"{kind}_v{len(vocab)}_l{length}", make, vocab, length, source, **kw)


def _ints(n: int, start: int = 0) -> tuple:
    return tuple(range(start, start + n))


# One list, smallest rung of each kind first; tests run the rungs marked SMALL.
LADDER: tuple[ZooEntry, ...] = (
    _rung("reverse", _reverse, _ints(6, 1), 6, f"{LIB}.make_reverse(tokens)"),
    _rung("reverse", _reverse, _ints(10, 1), 8, f"{LIB}.make_reverse(tokens)"),
    _rung("reverse", _reverse, LETTERS, 10, f"{LIB}.make_reverse(tokens)"),
    _rung("hist", _hist, LETTERS[:10], 8, f"{LIB}.make_hist()"),
    _rung("hist", _hist, LETTERS, 10, f"{LIB}.make_hist()"),
    _rung("count", _count, LETTERS[:10], 8, f'{LIB}.make_count(tokens, "a")'),
    _rung("count", _count, LETTERS, 10, f'{LIB}.make_count(tokens, "a")'),
    # tracr 1.0 cannot compile shift_by once the vocabulary outgrows max_seq_len + 2 (a numpy broadcast error in
    # its attention weights: 13 tokens at length 10 fail, 26 at length 24 compile), so this rung stops at 12
    _rung("shift_by", _shift_by, LETTERS[:12], 10, f"{LIB}.shift_by(2, tokens)"),
    _rung("sort_unique", _sort_unique, _ints(10, 1), 8, f"{LIB}.make_sort_unique(tokens, tokens)", unique=True),
    _rung("sort_unique", _sort_unique, _ints(26, 1), 10, f"{LIB}.make_sort_unique(tokens, tokens)", unique=True),
    _rung("detect_pattern", partial(_detect, "abc"), LETTERS[:10], 10, f'{LIB}.detect_pattern(tokens, "abc")',
          balance=True),
    _rung("shuffle_dyck2", _shuffle_dyck2, ("(", ")", "{", "}"), 8, f"{LIB}.make_shuffle_dyck2()", balance=True),
    _rung("shuffle_dyck2", _shuffle_dyck2, ("(", ")", "{", "}"), 10, f"{LIB}.make_shuffle_dyck2()", balance=True),
    _rung("all_equal", _all_equal, _ints(6), 6, "SequenceMap(h == n, make_hist(), make_length())", balance=True),
    _rung("all_equal", _all_equal, _ints(11), 9, "SequenceMap(h == n, make_hist(), make_length())", balance=True),
)
BY_NAME = {entry.name: entry for entry in LADDER}
SMALL = ("reverse_v6_l6", "all_equal_v6_l6")


def names() -> list[str]:
    return [entry.name for entry in LADDER]
