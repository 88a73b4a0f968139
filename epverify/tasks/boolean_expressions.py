"""Boolean Expressions (BIG-Bench Hard style).

An expression has 3 to 6 literals (True/False) joined by ``and``/``or``, with ``not`` and parentheses nested
at most 3 deep, written with spaced parentheses as in BBH: ``not ( True and False ) or True``.  Its value
follows Python's semantics (``not`` binds tighter than ``and``, which binds tighter than ``or``).  The target
is " True" or " False" (balanced by a coin flip per example) and the distractor is the other.

Corrupted: the same expression with literals changed so that its value differs, changing as few literals as
possible.  Accuracy takes the argmax over the True and False tokens only.

Prompt styles (option ``prompt``):
  * ``"instruction"`` (default): "Evaluate the result of a random Boolean expression.\\n\\nQ: <expr> is\\nA:"
  * ``"few-shot"``: three solved "Q: <expr> is\\nA: <value>" examples (shared by clean and corrupted) before
    the query.
"""

from __future__ import annotations

import ast
import itertools
import random
from typing import TYPE_CHECKING, Any

import torch

from .base import Example, Task, TaskError, check_count, continuation_token, make_rng, words_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

INSTRUCTION = "Evaluate the result of a random Boolean expression."
PROMPT_STYLES = ("instruction", "few-shot")
MIN_LITERALS, MAX_LITERALS = 3, 6
MAX_DEPTH = 3  # parenthesis nesting
LITERALS = ("True", "False")


def _parse(expression: str) -> ast.expr:
    """Syntax tree of a Boolean expression; ``?`` slots become the names ``_0``, ``_1``... in order."""
    slots = itertools.count()
    source = " ".join(f"_{next(slots)}" if token == "?" else token for token in expression.split())
    try:
        return ast.parse(source, mode="eval").body
    except SyntaxError:
        raise TaskError(f"not a Boolean expression of True/False/and/or/not: {expression!r}") from None


def _value(node: ast.expr, literals: tuple[bool, ...]) -> bool:
    """Value of a parsed expression with its slots filled from ``literals`` (Python's semantics)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id.startswith("_"):
        return literals[int(node.id[1:])]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _value(node.operand, literals)
    if isinstance(node, ast.BoolOp):
        values = [_value(v, literals) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    raise TaskError(f"not a Boolean expression of True/False/and/or/not: {ast.unparse(node)!r}")


def evaluate(expression: str) -> bool:
    """Value of an expression of True/False/and/or/not/parentheses, with Python's semantics (without eval)."""
    return _value(_parse(expression), ())


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """A random composition of ``total`` into ``parts`` positive integers."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def _nots(rng: random.Random) -> list[str]:
    roll = rng.random()
    return [] if roll < 0.6 else ["not"] if roll < 0.9 else ["not", "not"]


def _expression(leaves: int, depth: int, rng: random.Random) -> list[str]:
    """Tokens of an expression with ``leaves`` literal slots ("?") at parenthesis depth ``depth``."""
    if leaves == 1:
        return _operand(1, depth, rng)
    parts = _split(leaves, rng.randint(2, leaves), rng) if depth < MAX_DEPTH else [1] * leaves
    tokens: list[str] = []
    for i, size in enumerate(parts):
        if i:
            tokens.append(rng.choice(["and", "or"]))
        tokens.extend(_operand(size, depth, rng))
    return tokens


def _operand(leaves: int, depth: int, rng: random.Random) -> list[str]:
    """Tokens of one operand: optional nots, then a literal slot or a parenthesized sub-expression."""
    prefix = _nots(rng)
    if leaves == 1:
        if depth < MAX_DEPTH and rng.random() < 0.15:
            return [*prefix, "(", "?", ")"]
        return [*prefix, "?"]
    return [*prefix, "(", *_expression(leaves, depth + 1, rng), ")"]


def _fill(shape: list[str], values: tuple[bool, ...]) -> str:
    it = iter(values)
    return " ".join(str(next(it)) if token == "?" else token for token in shape)


def paren_depth(expression: str) -> int:
    """Deepest parenthesis nesting of an expression."""
    depth = deepest = 0
    for char in expression:
        depth += char == "("
        depth -= char == ")"
        deepest = max(deepest, depth)
    return deepest


def random_pair(rng: random.Random) -> tuple[str, str, bool]:
    """A clean expression, a same-shape corrupted one with the other value, and the clean value."""
    leaves = rng.randint(MIN_LITERALS, MAX_LITERALS)
    shape = _expression(leaves, 0, rng)
    tree = _parse(" ".join(shape))
    assignments = list(itertools.product((True, False), repeat=leaves))
    values = {a: _value(tree, a) for a in assignments}
    wanted = rng.random() < 0.5
    # A read-once formula is never constant, so both values occur.
    clean = rng.choice([a for a in assignments if values[a] == wanted])
    flipped = [a for a in assignments if values[a] != wanted]
    distance = {a: sum(x != y for x, y in zip(a, clean, strict=True)) for a in flipped}
    closest = min(distance.values())
    corrupted = rng.choice([a for a in flipped if distance[a] == closest])
    return _fill(shape, clean), _fill(shape, corrupted), wanted


def _question(expression: str) -> str:
    return f"Q: {expression} is\nA:"


class BooleanExpressionsTask(Task):
    """Boolean Expressions: evaluate a random True/False/and/or/not expression."""

    name = "boolean-expressions"

    def __init__(self, prompt: str = "instruction") -> None:
        if prompt not in PROMPT_STYLES:
            raise TaskError(
                f"task 'boolean-expressions': prompt must be one of {', '.join(PROMPT_STYLES)}, "
                f"got {prompt!r}"
            )
        self.prompt = prompt

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        check_count(self.name, n)
        rng = make_rng(f"{self.name}:{self.prompt}", seed)
        result = []
        for _ in range(n):
            clean, corrupted, value = random_pair(rng)
            if self.prompt == "few-shot":
                shots = []
                for _ in range(3):
                    shot, _, shot_value = random_pair(rng)
                    shots.append(f"{_question(shot)} {shot_value}\n\n")
                prefix = "".join(shots)
            else:
                prefix = f"{INSTRUCTION}\n\n"
            result.append(
                Example(
                    clean=prefix + _question(clean),
                    corrupted=prefix + _question(corrupted),
                    target=f" {value}",
                    distractor=f" {not value}",
                    extras={"expression": clean, "corrupted_expression": corrupted, "value": value},
                )
            )
        return result

    def vocabulary(self) -> list[str]:
        return words_of(INSTRUCTION, "Q: is A:", "( ) and or not", *LITERALS)

    def _task_fields(
        self, tokenizer: PreTrainedTokenizerBase, examples: list[Example], context: Any
    ) -> dict[str, Any]:
        prompt = examples[0].clean
        ids = [continuation_token(tokenizer, prompt, f" {word}")[0] for word in LITERALS]
        return {"answer_ids": torch.tensor(ids, dtype=torch.long)}  # (2,) ids of True, False
