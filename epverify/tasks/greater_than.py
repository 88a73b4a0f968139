"""Greater-Than (Hanna et al. 2023).

Clean: "The war lasted from the year 1732 to the year 17" -> any two-digit year greater than 32. Corrupted:
the same sentence with the start year's last two digits replaced by "01" ("... from the year 1701 ..."), which
leaves every year as a valid answer.

``Example.target`` is one sampled year YY' > YY and ``Example.distractor`` is YY itself, so ``logit_diff`` is
a rough per-example proxy; the task's own metric is ``prob_diff``: the probability the model puts on the
two-digit tokens greater than YY minus the probability on those less than or equal to YY, at the target
position. The data carries this as ``shared_info["year_ids"]`` (100,) (token id of "00".."99") and
``row_info["thresholds"]`` (N,) (each row's YY); ``greater_mask(thresholds)`` expands it to (N, 100).
``accuracy`` asks whether the argmax among the 100 year tokens is greater than YY.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..core.dataset import PruneData
from .base import (
    Example,
    Task,
    TaskError,
    check_count,
    make_rng,
    standalone_token,
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

    def _task_fields(
        self, tokenizer: PreTrainedTokenizerBase, examples: list[Example], context: YearIds
    ) -> dict[str, Any]:
        ids, _ = context
        return {
            "shared_info": {"year_ids": torch.tensor(ids, dtype=torch.long)},  # (100,)
            "row_info": {"thresholds": torch.tensor([int(e.extras["yy"]) for e in examples], dtype=torch.long)},
        }

    # -- metrics ---------------------------------------------------------------------------------------------

    metric_names = ("accuracy", "prob_diff")

    def score(self, outputs: torch.Tensor, data: PruneData, row_of_position: torch.Tensor) -> dict[str, torch.Tensor]:
        """``prob_diff`` per position, and ``accuracy``: "the argmax over the year tokens is above YY"."""
        if "year_ids" not in data.shared_info or "thresholds" not in data.row_info:
            raise TaskError("greater-than metrics need data encoded by the greater-than task")
        year_ids = data.shared_info["year_ids"].to(outputs.device)
        thresholds = data.row_info["thresholds"].to(outputs.device)[row_of_position]  # (P,)
        probs = outputs.float().softmax(dim=-1)[:, year_ids]  # (P, 100)
        greater = greater_mask(thresholds)  # (P, 100)
        prob_diff = (probs * greater).sum(dim=-1) - (probs * ~greater).sum(dim=-1)  # (P,)
        best_year = outputs[:, year_ids].argmax(dim=-1)  # (P,)
        return {"accuracy": (best_year > thresholds).float(), "prob_diff": prob_diff}


def greater_mask(thresholds: torch.Tensor) -> torch.Tensor:
    """(N, 100) bool: [i, k] is true iff the two-digit year k is above row i's YY."""
    years = torch.arange(100, device=thresholds.device)
    return years[None, :] > thresholds[:, None]
