"""Gendered Pronouns (Mathwin et al. 2023; used in the Edge Pruning paper).

Clean: "So John is a really great friend, isn't" -> " he" (distractor " she").
Corrupted: the same sentence with a name of the other gender, so the corrupted prompt's answer is the other
pronoun (recorded as ``extras["corrupted_target"]``).
"""

from __future__ import annotations

from .base import Example, Task, check_count, make_rng, words_of

TEMPLATES = [
    "So {name} is a really great friend, isn't",
    "So {name} is such a good cook, isn't",
    "I think {name} is very kind, isn't",
    "Everyone says {name} is really smart, isn't",
    "So {name} was late again today, wasn't",
    "Well, {name} is a very talented singer, isn't",
    "So {name} really likes to read, doesn't",
    "Honestly, {name} was a great teacher, wasn't",
]

MALE_NAMES = [
    "John", "David", "Michael", "James", "Robert", "Mark", "Paul", "Peter", "Thomas", "Daniel", "Kevin",
    "Brian", "Steven", "Andrew", "Richard", "George", "Tom", "Jack", "Frank", "Henry",
]  # fmt: skip

FEMALE_NAMES = [
    "Mary", "Sarah", "Jessica", "Lisa", "Emily", "Anna", "Laura", "Rachel", "Susan", "Karen", "Linda", "Amy",
    "Julie", "Kate", "Emma", "Alice", "Helen", "Nancy", "Jane", "Lucy",
]  # fmt: skip

PRONOUNS = {"male": " he", "female": " she"}


class GenderedPronounsTask(Task):
    """Gendered Pronouns: complete a tag question with the pronoun matching the name's gender."""

    name = "gendered-pronouns"

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        check_count(self.name, n)
        rng = make_rng(self.name, seed)
        result = []
        for _ in range(n):
            template = rng.choice(TEMPLATES)
            gender = rng.choice(["male", "female"])
            other = "female" if gender == "male" else "male"
            names = {"male": MALE_NAMES, "female": FEMALE_NAMES}
            name, swapped = rng.choice(names[gender]), rng.choice(names[other])
            result.append(
                Example(
                    clean=template.format(name=name),
                    corrupted=template.format(name=swapped),
                    target=PRONOUNS[gender],
                    distractor=PRONOUNS[other],
                    extras={"name": name, "gender": gender, "corrupted_target": PRONOUNS[other]},
                )
            )
        return result

    def vocabulary(self) -> list[str]:
        filled = [t.format(name="") for t in TEMPLATES]
        return words_of(*filled, *MALE_NAMES, *FEMALE_NAMES, *PRONOUNS.values())
