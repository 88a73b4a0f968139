"""The one dataset type every stage reads, and the one way it is cut into batches.

A `PruneData` holds clean inputs, their corrupted partners (interchange ablation needs them), the positions whose
outputs are compared with the full model (`loss_mask`), and, for a task, the answer each example should get
(`target_ids`, `distractor_ids`, optionally restricted to `answer_ids`). Tasks (`epverify.tasks`) encode into it,
the Tracr dataset recipes build it (`epverify.tracr.policy.tracr_data`), and training, evaluation, the methods
and the curves all read it through `epverify.eval.Evaluator`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from ..errors import EpverifyError


@dataclass
class PruneData:
    """Clean inputs, their corrupted partners, where faithfulness is measured, and (tasks) the answers.

    Per example (N rows, T padded positions):
        input_ids       (N, T) long  clean tokens, right-padded
        attention_mask  (N, T)       1 on real tokens
        loss_mask       (N, T) bool  positions compared with the full model
        corrupted_ids   (N, T) long  the corrupted partners (interchange ablation), or None
        target_ids      (N,)   long  the token a task wants at each row's loss positions, or None
        distractor_ids  (N,)   long  the competing wrong token (logit difference), or None
        row_info        name -> (N, ...) task-specific facts per row (greater-than: `thresholds`)
    Shared by every row:
        answer_ids      (K,)   long  a task's decisions are taken among these tokens only, or None
        shared_info     name -> tensor (greater-than: `year_ids`)
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    corrupted_ids: torch.Tensor | None = None
    target_ids: torch.Tensor | None = None
    distractor_ids: torch.Tensor | None = None
    answer_ids: torch.Tensor | None = None
    row_info: dict[str, torch.Tensor] = field(default_factory=dict)
    shared_info: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.input_ids.shape[0] if self.input_ids.dim() == 2 else 0
        if n == 0 or self.input_ids.numel() == 0:
            raise EpverifyError("the dataset is empty: give at least one example")
        for name in ("attention_mask", "loss_mask", "corrupted_ids"):
            t = getattr(self, name)
            if t is not None and t.shape != self.input_ids.shape:
                raise EpverifyError(
                    f"{name} has shape {tuple(t.shape)} but the clean inputs are {tuple(self.input_ids.shape)}:"
                    " clean and corrupted batches must have the same shape"
                )
        for name in ("target_ids", "distractor_ids", *self.row_info):
            t = self.row_info[name] if name in self.row_info else getattr(self, name)
            if t is not None and t.shape[:1] != (n,):
                raise EpverifyError(f"{name} has {t.shape[0] if t.dim() else 0} rows but the dataset has {n}:"
                                    " give one per example")
        if (self.target_ids is None) != (self.distractor_ids is None):
            raise EpverifyError("give both target_ids and distractor_ids (one id per example), or neither")
        if not self.loss_mask.any():
            raise EpverifyError("no position is marked for the loss: loss_mask is all False")

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def positions_per_row(self) -> torch.Tensor:
        """(N,) the number of loss positions of every row."""
        return self.loss_mask.sum(1)

    def select(self, index: torch.Tensor | slice) -> PruneData:
        """The rows `index` (an index tensor or a slice), every per-row field with them."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        changes = {name: getattr(self, name)[index] for name in PER_ROW if getattr(self, name) is not None}
        changes["row_info"] = {k: v[index] for k, v in self.row_info.items()}
        return replace(self, **changes)

    def to(self, device: torch.device | str) -> PruneData:
        """A copy with every tensor on `device`."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                changes[f.name] = value.to(device)
            elif isinstance(value, dict):
                changes[f.name] = {k: v.to(device) for k, v in value.items()}
        return replace(self, **changes)

    def batches(self, batch_size: int, rows: torch.Tensor | None = None,
                min_last: int = 1) -> list[torch.Tensor]:
        """Index tensors of consecutive `batch_size` rows of `rows` (default: every row, in order). A last batch
        smaller than `min_last` joins the one before it (resample ablation needs two rows per batch)."""
        if batch_size < 1:
            raise EpverifyError(f"batch size must be at least 1, got {batch_size}")
        rows = torch.arange(len(self)) if rows is None else torch.as_tensor(rows, dtype=torch.long)
        out = list(rows.split(batch_size))
        if len(out) > 1 and len(out[-1]) < min_last:
            out[-2] = torch.cat(out[-2:])
            out.pop()
        return out


PER_ROW = ("input_ids", "attention_mask", "loss_mask", "corrupted_ids", "target_ids", "distractor_ids")
