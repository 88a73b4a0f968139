"""Greater-Than (Hanna et al. 2023).

Clean: "The war lasted from the year 1732 to the year 17" -> any two-digit year greater than 32. Corrupted:
the same sentence with the start year's last two digits replaced by "01" ("... from the year 1701 ..."), which
leaves every year as a valid answer.

``Example.target`` is one sampled year YY' > YY and ``Example.distractor`` is YY itself, so ``logit_diff`` is
a rough per-example proxy; the task's own metric is ``prob_diff``: the probability the model puts on the
two-digit tokens greater than YY minus the probability on those less than or equal to YY, at the target
position. The batch carries this as ``year_ids`` (100,) (token id of "00".."99") and ``thresholds`` (N,) (each
row's YY); ``TaskBatch.greater_mask()`` expands it to (N, 100).  ``accuracy`` asks whether the argmax among
the 100 year tokens is greater than YY.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .base import (
    Example,
    Task,
    TaskBatch,
    TaskError,
    check_count,
    make_rng,
    standalone_token,
    target_logits,
    words_of,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TEMPLATE = "The {noun} lasted from the year {xx}{yy} to the year {xx}"

NOUNS = [
    "war", "abduction", "accord", "agreement", "alliance", "blockade", "campaign", "conflict", "consultation",
    "contract", "crusade", "deal", "dispute", "drought", "empire", "epidemic", "expedition", "famine",
    "journey", "occupation", "pilgrimage", "plague", "raid", "reign", "revolt", "siege", "strike", "truce",
    "voyage", "dynasty",
]  # fmt: skip

CENTURIES = list(range(11, 18))  # XX: 11 .. 17
FIRST_YY, LAST_YY = 2, 98  # YY: 02 .. 98, so both "greater" and "not greater" years exist
CORRUPT_YY = "01"

YearIds = tuple[list[int], list[str]]  # token id of "00".."99" (index = year), notes about multi-token years


def _two_digits(k: int) -> str:
    return f"{k:02d}"


class GreaterThanTask(Task):
    """Greater-Than: after "from the year XXYY to the year XX", predict a two-digit year above YY."""

    name = "greater-than"

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        check_count(self.name, n)
        rng = make_rng(self.name, seed)
        result = []
        for _ in range(n):
            noun = rng.choice(NOUNS)
            xx = str(rng.choice(CENTURIES))
            yy = rng.randint(FIRST_YY, LAST_YY)
            answer = rng.randint(yy + 1, 99)
            result.append(
                Example(
                    clean=TEMPLATE.format(noun=noun, xx=xx, yy=_two_digits(yy)),
                    corrupted=TEMPLATE.format(noun=noun, xx=xx, yy=CORRUPT_YY),
                    target=_two_digits(answer),
                    distractor=_two_digits(yy),
                    extras={"yy": yy, "xx": int(xx), "noun": noun},
                )
            )
        return result

    def vocabulary(self) -> list[str]:
        years = [f"{xx}{_two_digits(yy)}" for xx in CENTURIES for yy in range(100)]
        two_digit = [_two_digits(k) for k in range(100)]
        return words_of(TEMPLATE.format(noun="", xx="", yy=""), *NOUNS, *years, *two_digit)

    # -- encoding --------------------------------------------------------------------------------------------

    def _encoding_context(self, tokenizer: PreTrainedTokenizerBase) -> YearIds:
        """Token id of each two-digit string "00".."99" (its first token when it takes several)."""
        ids, several = [], []
        for k in range(100):
            token, count = standalone_token(tokenizer, _two_digits(k))
            if token is None:
                raise TaskError(
                    f"task 'greater-than': the tokenizer has no token for the year {_two_digits(k)!r}; "
                    "use a tokenizer whose vocabulary covers '00'..'99'"
                )
            if count > 1:
                several.append(_two_digits(k))
            ids.append(token)
        notes = []
        if several:
            notes.append(
                f"{len(several)} of the years '00'..'99' take several tokens (e.g. {several[0]!r}); "
                "using their first tokens"
            )
        return ids, notes

    def _token_ids(
        self, tokenizer: PreTrainedTokenizerBase, example: Example, context: YearIds
    ) -> tuple[int | None, int | None, list[str]]:
        ids, notes = context
        return ids[int(example.target)], ids[int(example.distractor)], notes

    def _shared_fields(
        self, tokenizer: PreTrainedTokenizerBase, examples: list[Example], context: YearIds
    ) -> dict[str, Any]:
        ids, _ = context
        return {
            "year_ids": torch.tensor(ids, dtype=torch.long),  # (100,)
            "thresholds": torch.tensor([int(e.extras["yy"]) for e in examples], dtype=torch.long),  # (N,)
        }

    # -- metrics ---------------------------------------------------------------------------------------------

    def metrics(self, logits: torch.Tensor, full_logits: torch.Tensor, batch: TaskBatch) -> dict[str, float]:
        """The base metrics plus ``prob_diff``; ``accuracy`` is "argmax over the year tokens is above YY"."""
        result = super().metrics(logits, full_logits, batch)
        if batch.year_ids is None or batch.thresholds is None:
            raise TaskError("greater-than metrics need a batch encoded by the greater-than task")
        final = target_logits(logits, batch).float()  # (N, V)
        probs = final.softmax(dim=-1)[:, batch.year_ids]  # (N, 100)
        greater = batch.greater_mask().to(probs.device)  # (N, 100)
        prob_diff = (probs * greater).sum(dim=-1) - (probs * ~greater).sum(dim=-1)  # (N,)
        best_year = final[:, batch.year_ids].argmax(dim=-1)  # (N,)
        result["prob_diff"] = prob_diff.mean().item()
        result["accuracy"] = (best_year > batch.thresholds.to(best_year.device)).float().mean().item()
        return result
