"""Indirect Object Identification (Wang et al. 2022).

Clean: "Then, Mary and John went to the store. John gave a drink to" -> " Mary" (the indirect object, IO); the
distractor is the repeated subject " John" (S).  Each template appears in two orders: ABBA (IO named first)
and BABA (S named first).  Corrupted: the same template, place and object with three new distinct names, none
of them in the clean prompt (Wang et al.'s "ABC" distribution), so the corrupted prompt says nothing about who
the indirect object is.
"""

from __future__ import annotations

from .base import Example, Task, check_count, make_rng, words_of

# {N1} and {N2} are the two names introduced first; {S} is the repeated subject.  The prompt stops right
# before the indirect object.  ABBA: N1 = IO, N2 = S.  BABA: N1 = S, N2 = IO.
TEMPLATES = [
    "Then, {N1} and {N2} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {N1} and {N2} had a lot of fun at the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {N1} and {N2} were working at the {PLACE}. {S} decided to give a {OBJECT} to",
    "Then, {N1} and {N2} were thinking about going to the {PLACE}. {S} wanted to give a {OBJECT} to",
    "Then, {N1} and {N2} had a long argument, and afterwards {S} said to",
    "After {N1} and {N2} went to the {PLACE}, {S} gave a {OBJECT} to",
    "When {N1} and {N2} got a {OBJECT} at the {PLACE}, {S} decided to give it to",
    "When {N1} and {N2} got a {OBJECT} at the {PLACE}, {S} decided to give the {OBJECT} to",
    "While {N1} and {N2} were working at the {PLACE}, {S} gave a {OBJECT} to",
    "While {N1} and {N2} were commuting to the {PLACE}, {S} gave a {OBJECT} to",
    "After the lunch, {N1} and {N2} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Afterwards, {N1} and {N2} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {N1} and {N2} had a long argument. Afterwards {S} said to",
    "The {PLACE} {N1} and {N2} went to had a {OBJECT}. {S} gave it to",
    "Friends {N1} and {N2} found a {OBJECT} at the {PLACE}. {S} gave it to",
    "Later, {N1} and {N2} met at the {PLACE}. {S} handed a {OBJECT} to",
]

NAMES = [
    "Mary", "John", "Tom", "James", "Dan", "Martin", "Amy", "Lisa", "Michael", "Kate", "Sarah", "Paul",
    "Andrew", "David", "Rachel", "Richard", "Anna", "Chris", "Laura", "Alice", "Steven", "George", "Jacob",
    "Emma", "Brian", "Kevin", "Jessica", "Thomas", "Peter", "Susan",
]  # fmt: skip

PLACES = [
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "station", "park", "beach",
]  # fmt: skip

OBJECTS = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack", "book", "letter"]


class IOITask(Task):
    """Indirect Object Identification: predict the name that is not the repeated subject."""

    name = "ioi"

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        check_count(self.name, n)
        rng = make_rng(self.name, seed)
        result = []
        for _ in range(n):
            index = rng.randrange(len(TEMPLATES))
            template = TEMPLATES[index]
            order = rng.choice(["ABBA", "BABA"])
            place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
            io, s, c1, c2, c3 = rng.sample(NAMES, 5)
            first, second = (io, s) if order == "ABBA" else (s, io)
            clean = template.format(N1=first, N2=second, S=s, PLACE=place, OBJECT=obj)
            corrupted = template.format(N1=c1, N2=c2, S=c3, PLACE=place, OBJECT=obj)
            result.append(
                Example(
                    clean=clean,
                    corrupted=corrupted,
                    target=" " + io,
                    distractor=" " + s,
                    extras={"template": index, "order": order, "io": io, "s": s},
                )
            )
        return result

    def vocabulary(self) -> list[str]:
        filled = [t.format(N1="", N2="", S="", PLACE="", OBJECT="") for t in TEMPLATES]
        return words_of(*filled, *NAMES, *PLACES, *OBJECTS)
