"""Training checkpoints: everything `trainer.prune` needs to continue a run exactly where it stopped.

A checkpoint holds the masks, the lambdas, both optimizers' moments, the random generator, the example sampler's
position, the score estimator's running statistics, the loss history and the step. It is written to a temporary
file in the same directory, flushed to disk and renamed over the old one, so a run killed at any moment leaves
either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..errors import EpverifyError
from . import atomic

FORMAT = "epverify.checkpoint/1"
FILENAME = "checkpoint.pt"


def fingerprint(*tensors: torch.Tensor | None) -> str:
    """A short hash of the training data, so a checkpoint is never resumed on different examples."""
    digest = hashlib.sha256()
    for t in tensors:
        if t is not None:
            digest.update(str(tuple(t.shape)).encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save(path: str | Path, state: dict) -> None:
    """Write `state` atomically: a temporary file, fsync, then rename over `path`."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())

    atomic.write_file(path, write)


def load(path: str | Path) -> dict:
    """Read a checkpoint written by `save`; a missing, truncated or foreign file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise EpverifyError(f"no checkpoint at {path}: resume a directory that a run with checkpoints wrote"
                            " (epverify prune writes OUT/checkpoint.pt every --checkpoint-every steps)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several kinds for truncated or foreign files
        raise EpverifyError(
            f"checkpoint {path} is unreadable ({type(err).__name__}): it is truncated or not an epverify"
            " checkpoint; delete it and start the run again without --resume"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise EpverifyError(f"{path} is not an epverify checkpoint (expected format {FORMAT}): start the run"
                            " again without --resume")
    return state


def check_compatible(state: dict, config: dict, num_edges: int, data_hash: str, path: str | Path) -> None:
    """Refuse to continue a checkpoint under a different configuration, model graph or dataset (settings that
    change only the memory a step takes, `train.config.MEMORY_ONLY`, may differ)."""
    from ..train.config import MEMORY_ONLY

    if state["num_edges"] != num_edges:
        raise EpverifyError(f"checkpoint {path} was made for a graph of {state['num_edges']} edges, this model has"
                            f" {num_edges}: resume with the model the run started with")
    changed = sorted(k for k in set(config) | set(state["config"])
                     if config.get(k) != state["config"].get(k) and k not in MEMORY_ONLY)
    if changed:
        detail = ", ".join(f"{k}: {state['config'].get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise EpverifyError(f"checkpoint {path} was made with a different configuration ({detail}): resume with"
                            " the run's own configuration")
    if state["data"] != data_hash:
        raise EpverifyError(f"checkpoint {path} was made on different training examples: resume with the same"
                            " task, examples and seed")
