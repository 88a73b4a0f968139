"""Core types shared by every task: examples and the Task base class.

A task produces :class:`Example` pairs of plain strings (a clean prompt, a corrupted prompt of the same shape,
the token the model should predict next and a distractor).  :meth:`Task.encode` turns them into the one dataset
type, :class:`epverify.PruneData`, with a user's Hugging Face tokenizer (the loss position of each row is its
last real token); the evaluator (`epverify.eval.Evaluator`) measures circuits on it, with the task's own metrics
(:meth:`Task.score`) added.

Tokenization rules (the same for every task):

* Prompts are encoded with the tokenizer's own special tokens; leading ones (a BOS) are kept, trailing ones
  (an EOS or SEP that some tokenizers append) are removed, so the last real token is always the prompt's last
  token.
* A pair whose clean and corrupted prompts encode to different lengths is dropped and counted
  (``EncodedTask.dropped`` and ``EncodedTask.dropped_reasons``): interchange ablation needs the two runs
  aligned position by position.
* A target or distractor string is mapped to one token id: the first token that the tokenizer produces for it
  as a continuation of the clean prompt (``encode(prompt + target)`` minus ``encode(prompt)``), which gives
  GPT-2's ``" he"``, SentencePiece's ``"▁he"`` and a word-level tokenizer's ``"he"`` alike.  When the prompt's
  tokens are not a prefix of the concatenation's, the string is encoded on its own, and if that gives nothing
  or the unknown token, again without its leading space.  A string of several tokens is represented by its
  first token and a note is added to ``EncodedTask.notes``.  A pair whose target or distractor is the unknown
  token, or whose target and distractor share their token, is dropped and counted.
* Sequences are right-padded with the tokenizer's pad id (its EOS id when it has no pad token, else 0).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..core.dataset import PruneData
from ..errors import EpverifyError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class TaskError(EpverifyError):
    """A task was asked for something it cannot do (unknown name, bad file, nothing left after encoding)."""


@dataclass
class Example:
    """One clean/corrupted prompt pair with the answer the model should give on the clean prompt.

    ``target`` and ``distractor`` are continuation strings written as GPT-2 would see them (``" Mary"``,
    ``" he"``); ``extras`` holds task-specific facts (greater-than's ``yy``, boolean's ``value``...).
    """

    clean: str
    corrupted: str
    target: str
    distractor: str
    extras: dict[str, Any] = field(default_factory=dict)


# Why a pair is dropped: cause -> (what happened, what to do about it)
CAUSES = {
    "length": ("its clean and corrupted prompts tokenize to different lengths",
               "use a tokenizer that keeps each name (each word the corruption changes) as one token, or write the"
               " pairs yourself in a JSONL file (--task jsonl --data FILE)"),
    "unknown": ("its target or distractor is no token of the tokenizer (or only its unknown token)",
                "use a tokenizer whose vocabulary holds the task's answers, or a JSONL file with answers it knows"),
    "same": ("its target and distractor start with the same token",
             "use a tokenizer that tells the answers apart, or a JSONL file with answers that differ in their first"
             " token"),
    "empty": ("its clean prompt tokenizes to nothing", "check the prompts (a JSONL file's \"clean\" field)"),
}


@dataclass
class EncodedTask:
    """Result of :meth:`Task.encode`: the batch plus what was left out and why."""

    data: PruneData
    examples: list[Example]  # the examples that survived, in row order
    dropped: int = 0
    dropped_reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. multi-token targets reduced to their first token
    dropped_by_cause: dict[str, int] = field(default_factory=dict)  # cause (a key of CAUSES) -> pairs

    @property
    def requested(self) -> int:
        return len(self.examples) + self.dropped

    def summary(self) -> str:
        """One line: how many examples were used and dropped, and why, by cause."""
        line = f"examples: {len(self.examples)} of {self.requested} used"
        if self.dropped:
            causes = ", ".join(f"{n} because {CAUSES[c][0]}" for c, n in self.dropped_by_cause.items())
            line += f"; {self.dropped} dropped: {causes}"
        return line

    def fix(self) -> str:
        """What to do about the most common cause of dropped pairs."""
        cause = max(self.dropped_by_cause, key=self.dropped_by_cause.get)
        return CAUSES[cause][1]


# ------------------------------------------------------------------------------------------------------------
# Tokenization helpers
# ------------------------------------------------------------------------------------------------------------


def _encode_plain(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a prompt with the tokenizer's leading special tokens (BOS) but no trailing ones."""
    with_special = list(tokenizer.encode(text, add_special_tokens=True))
    plain = _encode_plain(tokenizer, text)
    if not plain:
        return with_special
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return with_special[: start + len(plain)]
    return with_special


def continuation_token(tokenizer: PreTrainedTokenizerBase, prompt: str, text: str) -> tuple[int | None, int]:
    """Token id that ``text`` starts with when it follows ``prompt``, and how many tokens ``text`` takes.

    Returns ``(None, 0)`` when the text gives no token or only the unknown token.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    prompt_ids = _encode_plain(tokenizer, prompt)
    joined = _encode_plain(tokenizer, prompt + text)
    if joined[: len(prompt_ids)] == prompt_ids and len(joined) > len(prompt_ids):
        rest = joined[len(prompt_ids) :]
        if rest[0] != unk:
            return rest[0], len(rest)
    return standalone_token(tokenizer, text)


def standalone_token(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[int | None, int]:
    """Token id that ``text`` starts with when encoded on its own (retrying without leading spaces)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    for candidate in (text, text.lstrip()):
        ids = _encode_plain(tokenizer, candidate)
        # SentencePiece may encode a leading space as a token of its own: skip tokens that decode to nothing.
        while len(ids) > 1 and not tokenizer.decode([ids[0]]).strip():
            ids = ids[1:]
        if ids and ids[0] != unk:
            return ids[0], len(ids)
    return None, 0


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used for right padding: pad token, else EOS, else 0."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


# ------------------------------------------------------------------------------------------------------------
# Task base class
# ------------------------------------------------------------------------------------------------------------


class Task:
    """A circuit-discovery task: generates prompt pairs and encodes them; may add its own metrics.

    Subclasses set ``name`` and implement :meth:`examples` and :meth:`vocabulary`; they may override
    :meth:`_encoding_context` (tokenizer facts computed once per encode), :meth:`_token_ids` (how targets map
    to ids), :meth:`_task_fields` (extra dataset fields) and :meth:`score` with ``metric_names``.
    """

    name: str = "task"
    metric_names: tuple[str, ...] = ()  # the metrics :meth:`score` returns (an `accuracy` replaces the default)

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        """``n`` examples, the same ones for the same seed."""
        raise NotImplementedError

    def vocabulary(self) -> list[str]:
        """Every word the task's prompts and answers can contain (to build a word-level tokenizer over it)."""
        raise NotImplementedError

    def score(self, outputs: torch.Tensor, data: PruneData, row_of_position: torch.Tensor) -> dict[str, torch.Tensor]:
        """The task's own metrics per loss position, {name: (P,)}, for the circuit's outputs (P, V) at the loss
        positions of ``data``'s rows (``row_of_position``: the row of each position). Default: none."""
        return {}

    # -- encoding --------------------------------------------------------------------------------------------

    def _encoding_context(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        """Whatever :meth:`_token_ids` and :meth:`_task_fields` need from the tokenizer, computed once."""
        return None

    def _token_ids(
        self, tokenizer: PreTrainedTokenizerBase, example: Example, context: Any
    ) -> tuple[int | None, int | None, list[str]]:
        """Target and distractor token ids for one example (None when unusable), plus notes about them."""
        notes = []
        ids = []
        for role, text in (("target", example.target), ("distractor", example.distractor)):
            token, count = continuation_token(tokenizer, example.clean, text)
            if count > 1:
                notes.append(f"{role} {text!r} is {count} tokens; using its first token")
            ids.append(token)
        return ids[0], ids[1], notes

    def _task_fields(
        self, tokenizer: PreTrainedTokenizerBase, examples: list[Example], context: Any
    ) -> dict[str, Any]:
        """Extra PruneData fields for the surviving examples (answer_ids, row_info, shared_info)."""
        return {}

    def encode(
        self, tokenizer: PreTrainedTokenizerBase, examples: list[Example], max_length: int | None = None
    ) -> EncodedTask:
        """Tokenize the examples into a right-padded :class:`PruneData` (rules: see the module docstring).

        Raises TaskError when a prompt is longer than ``max_length`` or when no pair survives.
        """
        if not examples:
            raise TaskError(f"task {self.name!r}: no examples to encode; ask for n >= 1 examples")
        context = self._encoding_context(tokenizer)
        kept: list[Example] = []
        rows: list[tuple[list[int], list[int], int, int]] = []
        reasons: list[str] = []
        notes: list[str] = []
        causes: dict[str, int] = {}
        for index, example in enumerate(examples):
            row, problem, example_notes = self._encode_example(tokenizer, example, index, context, max_length)
            if problem is not None:
                cause, detail = problem
                reasons.append(f"example {index}: {detail}")
                causes[cause] = causes.get(cause, 0) + 1
                continue
            notes += [note for note in example_notes if note not in notes]
            kept.append(example)
            rows.append(row)
        if not kept:
            cause = max(causes, key=causes.get)
            raise TaskError(
                f"task {self.name!r}: none of the {len(examples)} pairs survived encoding: {causes[cause]} because"
                f" {CAUSES[cause][0]} (first: {reasons[0]}); {CAUSES[cause][1]}"
            )
        data = _assemble(rows, pad_id_of(tokenizer), self._task_fields(tokenizer, kept, context))
        return EncodedTask(data=data, examples=kept, dropped=len(reasons), dropped_reasons=reasons, notes=notes,
                           dropped_by_cause=causes)

    def _encode_example(self, tokenizer, example: Example, index: int, context, max_length: int | None):
        """(clean ids, corrupted ids, target, distractor), or why the pair is dropped (cause, detail); plus notes."""
        clean = encode_prompt(tokenizer, example.clean)
        corrupted = encode_prompt(tokenizer, example.corrupted)
        for label, ids in (("clean", clean), ("corrupted", corrupted)):
            if max_length is not None and len(ids) > max_length:
                raise TaskError(
                    f"task {self.name!r}: example {index} {label} prompt is {len(ids)} tokens, longer than the"
                    f" {max_length} positions the model takes (max_length={max_length}); use shorter prompts (a"
                    " JSONL file) or a model with more positions"
                )
        if not clean:
            return None, ("empty", "clean prompt encodes to no tokens"), []
        if len(clean) != len(corrupted):
            return None, ("length", f"clean is {len(clean)} tokens but corrupted is {len(corrupted)} tokens"), []
        target, distractor, notes = self._token_ids(tokenizer, example, context)
        if target is None or distractor is None:
            which = "target" if target is None else "distractor"
            text = example.target if target is None else example.distractor
            return None, ("unknown", f"{which} {text!r} encodes to no token or the unknown token"), []
        if target == distractor:
            return None, ("same", f"target {example.target!r} and distractor {example.distractor!r} "
                          "start with the same token"), []
        return (clean, corrupted, target, distractor), None, notes


def _assemble(rows: list[tuple[list[int], list[int], int, int]], pad: int, fields: dict[str, Any]) -> PruneData:
    """Right-padded tensors of the encoded rows; the loss is taken at each row's last real token."""
    n = len(rows)
    width = max(len(clean) for clean, _, _, _ in rows)
    clean_ids = torch.full((n, width), pad, dtype=torch.long)  # (N, T)
    corrupted_ids = torch.full((n, width), pad, dtype=torch.long)  # (N, T)
    attention_mask = torch.zeros((n, width), dtype=torch.long)  # (N, T)
    for i, (clean, corrupted, _, _) in enumerate(rows):
        clean_ids[i, : len(clean)] = torch.tensor(clean, dtype=torch.long)
        corrupted_ids[i, : len(corrupted)] = torch.tensor(corrupted, dtype=torch.long)
        attention_mask[i, : len(clean)] = 1
    loss_mask = torch.zeros((n, width), dtype=torch.bool)  # (N, T)
    loss_mask[torch.arange(n), attention_mask.sum(dim=1) - 1] = True
    return PruneData(
        input_ids=clean_ids, attention_mask=attention_mask, loss_mask=loss_mask, corrupted_ids=corrupted_ids,
        target_ids=torch.tensor([r[2] for r in rows], dtype=torch.long),
        distractor_ids=torch.tensor([r[3] for r in rows], dtype=torch.long), **fields,
    )


def target_positions(data: PruneData) -> torch.Tensor:
    """(N,) the index of each row's last real token, where a task's loss is taken."""
    return data.attention_mask.sum(dim=1) - 1


# ------------------------------------------------------------------------------------------------------------
# Helpers for generated tasks
# ------------------------------------------------------------------------------------------------------------


def check_count(task: str, n: int) -> None:
    """Reject a negative example count with a clear message."""
    if not isinstance(n, int) or n < 0:
        raise TaskError(f"task {task!r}: n must be a non-negative integer, got {n!r}")


def make_rng(task: str, seed: int) -> random.Random:
    """A private random generator for one (task, seed): independent of the global random state."""
    return random.Random(f"{task}:{seed}")


def words_of(*texts: str) -> list[str]:
    """The whitespace-separated words of some texts, de-duplicated and sorted."""
    found: set[str] = set()
    for text in texts:
        found.update(text.split())
    return sorted(found)
