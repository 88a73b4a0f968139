"""Core types shared by every task: examples, the encoded batch the trainer consumes, and the Task base class.

A task produces :class:`Example` pairs of plain strings (a clean prompt, a corrupted prompt of the same shape,
the token the model should predict next and a distractor).  :meth:`Task.encode` turns them into a
:class:`TaskBatch` of tensors with a user's Hugging Face tokenizer, and :meth:`Task.metrics` scores model
outputs on that batch.

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
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

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


# Fields of TaskBatch with one row per example (sliced by select); the others are shared by all rows.
_PER_EXAMPLE_FIELDS = (
    "clean_ids",
    "corrupted_ids",
    "attention_mask",
    "target_positions",
    "kl_mask",
    "target_ids",
    "distractor_ids",
    "thresholds",
)


@dataclass
class TaskBatch:
    """The tensors a trainer consumes for one task.

    Per example (N rows, T padded positions):
        clean_ids        (N, T) long  clean prompt tokens, right-padded
        corrupted_ids    (N, T) long  corrupted prompt tokens, same length as the clean ones per row
        attention_mask   (N, T) long  1 on real tokens, 0 on padding (shared by clean and corrupted)
        target_positions (N,)   long  index of the last real token, whose next-token distribution is scored
        kl_mask          (N, T) bool  positions where KL(full || circuit) is taken (here: the target position)
        target_ids       (N,)   long  token id of the correct continuation
        distractor_ids   (N,)   long  token id of the competing wrong continuation
        thresholds       (N,)   long  greater-than only: the start year's two digits YY (else None)

    Shared by all rows:
        answer_ids       (K,)   long  when set, accuracy takes the argmax over these tokens only
                                      (boolean-expressions: the ids of True and False)
        year_ids         (100,) long  greater-than only: year_ids[k] is the token id of the two-digit string
                                      f"{k:02d}"; token year_ids[k] counts as "greater" for row i iff
                                      k > thresholds[i] (see :meth:`greater_mask`)
    """

    clean_ids: torch.Tensor
    corrupted_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_positions: torch.Tensor
    kl_mask: torch.Tensor
    target_ids: torch.Tensor
    distractor_ids: torch.Tensor
    answer_ids: torch.Tensor | None = None
    year_ids: torch.Tensor | None = None
    thresholds: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.clean_ids.shape[0]

    def select(self, indices: Sequence[int] | torch.Tensor | slice) -> TaskBatch:
        """Return the batch restricted to the given rows (a list or tensor of indices, or a slice)."""
        if isinstance(indices, slice):
            index: Any = indices
        else:
            index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        changes = {}
        for name in _PER_EXAMPLE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                changes[name] = value[index]
        return replace(self, **changes)

    def to(self, device: torch.device | str) -> TaskBatch:
        """Return a copy with every tensor moved to ``device``."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                changes[f.name] = value.to(device)
        return replace(self, **changes)

    def greater_mask(self) -> torch.Tensor:
        """Greater-than only: (N, 100) bool, [i, k] true iff the two-digit year k is above row i's YY."""
        if self.thresholds is None or self.year_ids is None:
            raise TaskError("greater_mask() needs a greater-than batch (thresholds and year_ids are not set)")
        years = torch.arange(100, device=self.thresholds.device)
        return years[None, :] > self.thresholds[:, None]


@dataclass
class EncodedTask:
    """Result of :meth:`Task.encode`: the batch plus what was left out and why."""

    batch: TaskBatch
    examples: list[Example]  # the examples that survived, in batch order
    dropped: int = 0
    dropped_reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. multi-token targets reduced to their first token


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
    """A circuit-discovery task: generates prompt pairs, encodes them, and scores model outputs.

    Subclasses set ``name`` and implement :meth:`examples` and :meth:`vocabulary`; they may override
    :meth:`_encoding_context` (tokenizer facts computed once per encode), :meth:`_token_ids` (how targets map
    to ids), :meth:`_shared_fields` (extra batch fields) and :meth:`metrics`.
    """

    name: str = "task"

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        """``n`` examples, the same ones for the same seed."""
        raise NotImplementedError

    def vocabulary(self) -> list[str]:
        """Every word the task's prompts and answers can contain (to build a word-level tokenizer over it)."""
        raise NotImplementedError

    # -- encoding --------------------------------------------------------------------------------------------

    def _encoding_context(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        """Whatever :meth:`_token_ids` and :meth:`_shared_fields` need from the tokenizer, computed once."""
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

    def _shared_fields(
        self, tokenizer: PreTrainedTokenizerBase, examples: list[Example], context: Any
    ) -> dict[str, Any]:
        """Extra TaskBatch fields for the surviving examples (answer_ids, year_ids, thresholds)."""
        return {}

    def encode(
        self, tokenizer: PreTrainedTokenizerBase, examples: list[Example], max_length: int | None = None
    ) -> EncodedTask:
        """Tokenize the examples into a right-padded :class:`TaskBatch` (rules: see the module docstring).

        Raises TaskError when a prompt is longer than ``max_length`` or when no pair survives.
        """
        if not examples:
            raise TaskError(f"task {self.name!r}: no examples to encode; ask for n >= 1 examples")
        context = self._encoding_context(tokenizer)
        kept: list[Example] = []
        rows: list[tuple[list[int], list[int], int, int]] = []
        reasons: list[str] = []
        notes: list[str] = []
        for index, example in enumerate(examples):
            clean = encode_prompt(tokenizer, example.clean)
            corrupted = encode_prompt(tokenizer, example.corrupted)
            for label, ids in (("clean", clean), ("corrupted", corrupted)):
                if max_length is not None and len(ids) > max_length:
                    raise TaskError(
                        f"task {self.name!r}: example {index} {label} prompt is {len(ids)} tokens, "
                        f"longer than max_length={max_length}; raise max_length or use shorter prompts"
                    )
            if not clean:
                reasons.append(f"example {index}: clean prompt encodes to no tokens")
                continue
            if len(clean) != len(corrupted):
                reasons.append(
                    f"example {index}: clean is {len(clean)} tokens but corrupted is {len(corrupted)} tokens"
                )
                continue
            target, distractor, example_notes = self._token_ids(tokenizer, example, context)
            if target is None or distractor is None:
                which = "target" if target is None else "distractor"
                text = example.target if target is None else example.distractor
                reasons.append(f"example {index}: {which} {text!r} encodes to no token or the unknown token")
                continue
            if target == distractor:
                reasons.append(
                    f"example {index}: target {example.target!r} and distractor {example.distractor!r} "
                    "start with the same token"
                )
                continue
            for note in example_notes:
                if note not in notes:
                    notes.append(note)
            kept.append(example)
            rows.append((clean, corrupted, target, distractor))
        if not kept:
            first = f" (first reason: {reasons[0]})" if reasons else ""
            raise TaskError(
                f"task {self.name!r}: none of the {len(examples)} pairs survived encoding{first}; "
                "check that clean and corrupted prompts tokenize to the same length"
            )

        n = len(rows)
        width = max(len(clean) for clean, _, _, _ in rows)
        pad = pad_id_of(tokenizer)
        clean_ids = torch.full((n, width), pad, dtype=torch.long)  # (N, T)
        corrupted_ids = torch.full((n, width), pad, dtype=torch.long)  # (N, T)
        attention_mask = torch.zeros((n, width), dtype=torch.long)  # (N, T)
        for i, (clean, corrupted, _, _) in enumerate(rows):
            clean_ids[i, : len(clean)] = torch.tensor(clean, dtype=torch.long)
            corrupted_ids[i, : len(corrupted)] = torch.tensor(corrupted, dtype=torch.long)
            attention_mask[i, : len(clean)] = 1
        target_positions = attention_mask.sum(dim=1) - 1  # (N,)
        kl_mask = torch.zeros((n, width), dtype=torch.bool)  # (N, T)
        kl_mask[torch.arange(n), target_positions] = True
        batch = TaskBatch(
            clean_ids=clean_ids,
            corrupted_ids=corrupted_ids,
            attention_mask=attention_mask,
            target_positions=target_positions,
            kl_mask=kl_mask,
            target_ids=torch.tensor([r[2] for r in rows], dtype=torch.long),
            distractor_ids=torch.tensor([r[3] for r in rows], dtype=torch.long),
            **self._shared_fields(tokenizer, kept, context),
        )
        return EncodedTask(
            batch=batch, examples=kept, dropped=len(reasons), dropped_reasons=reasons, notes=notes
        )

    # -- metrics ---------------------------------------------------------------------------------------------

    def metrics(self, logits: torch.Tensor, full_logits: torch.Tensor, batch: TaskBatch) -> dict[str, float]:
        """Score circuit logits against the full model's, both on the clean input.

        ``logits`` and ``full_logits`` are (N, T, V), or (N, V) already taken at the target positions.
        Returns ``logit_diff`` (mean target minus distractor logit), ``accuracy`` (argmax is the target;
        restricted to ``batch.answer_ids`` when set), ``exact_match`` (circuit argmax equals the full model's)
        and ``kl`` (mean KL(full || circuit) over the ``kl_mask`` positions), all at the target positions.
        """
        final = target_logits(logits, batch).float()  # (N, V)
        full_final = target_logits(full_logits, batch).float()  # (N, V)
        rows = torch.arange(len(batch), device=final.device)
        diff = final[rows, batch.target_ids] - final[rows, batch.distractor_ids]  # (N,)
        if batch.answer_ids is not None:
            choice = batch.answer_ids[final[:, batch.answer_ids].argmax(dim=-1)]  # (N,)
        else:
            choice = final.argmax(dim=-1)  # (N,)
        return {
            "logit_diff": diff.mean().item(),
            "accuracy": (choice == batch.target_ids).float().mean().item(),
            "exact_match": (final.argmax(dim=-1) == full_final.argmax(dim=-1)).float().mean().item(),
            "kl": kl_divergence(logits, full_logits, batch),
        }


def _check_logits(logits: torch.Tensor, batch: TaskBatch) -> None:
    n, width = batch.clean_ids.shape
    full_shape = logits.dim() == 3 and tuple(logits.shape[:2]) == (n, width)
    final_shape = logits.dim() == 2 and logits.shape[0] == n
    if not (full_shape or final_shape):
        raise ValueError(
            f"logits have shape {tuple(logits.shape)}; expected (N, T, V) = ({n}, {width}, V) "
            f"or (N, V) = ({n}, V)"
        )


def target_logits(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """The (N, V) logits at each row's target position, from (N, T, V) logits (or (N, V) passed through)."""
    _check_logits(logits, batch)
    if logits.dim() == 2:
        return logits
    rows = torch.arange(len(batch), device=logits.device)
    return logits[rows, batch.target_positions.to(logits.device)]


def kl_divergence(logits: torch.Tensor, full_logits: torch.Tensor, batch: TaskBatch) -> float:
    """Mean KL(full || circuit) over the ``kl_mask`` positions ((N, V) inputs: over the target positions)."""
    _check_logits(logits, batch)
    _check_logits(full_logits, batch)
    if logits.dim() == 3 and full_logits.dim() == 3:
        mask = batch.kl_mask.to(logits.device)
        circuit, full = logits[mask].float(), full_logits[mask].float()  # (M, V)
    else:
        circuit = target_logits(logits, batch).float()  # (N, V)
        full = target_logits(full_logits, batch).float()  # (N, V)
    log_q = F.log_softmax(circuit, dim=-1)
    log_p = F.log_softmax(full, dim=-1)
    per_position = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (M,)
    return per_position.mean().clamp_min(0.0).item()


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
