"""Where a run's model lives and in what dtype: decided here, once, for every command and Python entry point.

    device: "auto" (the GPU when torch sees one, else the CPU), "cpu", "cuda" or "cuda:N"
    dtype:  "auto" (on a GPU: bfloat16 for a checkpoint stored in 16 bits, else float32; on the CPU: float32),
            "float32", "bfloat16" or "float16"

Only the frozen weights (and so the activations) take the dtype. Masks, Lagrange multipliers, their Adam state and
the loss stay float32 on the model's device (`epverify.train.loop`). Under `accelerate launch` (or torchrun) the
process's own device is used; asking for another one explicitly is an error, not a silent choice.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import EpverifyError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SIXTEEN_BITS = (torch.bfloat16, torch.float16)


def resolve_device(request: str | torch.device | None = "auto", launched: torch.device | None = None) -> torch.device:
    """The device a request names, checked against what this machine has. `launched`: the device `accelerate
    launch` gave this process (None when not launched); "auto" then means it, and any other device is refused."""
    text = "auto" if request is None else str(request).strip().lower()
    if text == "auto":
        if launched is not None:
            return launched
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise EpverifyError(f"--device {request}: not a device; give one of {', '.join(DEVICES)}") from None
    if device.type not in ("cpu", "cuda"):
        raise EpverifyError(f"--device {request}: epverify runs on the CPU or a CUDA GPU; give one of"
                            f" {', '.join(DEVICES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EpverifyError(f"--device {request}: torch sees no GPU here (torch.cuda.is_available() is False;"
                                f" torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device"
                                " cpu, or --device auto to take a GPU only when there is one")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise EpverifyError(f"--device {request}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    if launched is not None and device != launched:
        raise EpverifyError(f"--device {request} conflicts with the launch: accelerate launch gave this process"
                            f" {launched}; drop --device (auto uses the launch's device) or change the launch")
    return device


def stored_dtype(path: str | Path) -> torch.dtype | None:
    """The dtype a checkpoint's config.json says its weights were saved in (None when it does not say)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("dtype") or config.get("torch_dtype")
    return DTYPES.get(str(name).removeprefix("torch.")) if name else None


def resolve_dtype(request: str | torch.dtype | None = "auto", device: torch.device | str = "cpu",
                  stored: torch.dtype | None = None) -> torch.dtype:
    """The weights' dtype a request names on `device` for a checkpoint stored in `stored`."""
    if isinstance(request, torch.dtype):
        if request not in (*DTYPES.values(), torch.float64):
            raise EpverifyError(f"dtype {request}: give one of auto, {', '.join(DTYPES)}")
        return request
    text = "auto" if request is None else str(request).strip().lower().removeprefix("torch.")
    if text == "auto":
        on_gpu = torch.device(device).type == "cuda"
        return torch.bfloat16 if on_gpu and stored in SIXTEEN_BITS else torch.float32
    if text not in DTYPES:
        raise EpverifyError(f"--dtype {request}: give one of auto, {', '.join(DTYPES)}")
    return DTYPES[text]


def placement(path: str | Path | None, device="auto", dtype="auto",
              launched: torch.device | None = None) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) for loading the checkpoint at `path`: the one place every command asks."""
    where = resolve_device(device, launched)
    return where, resolve_dtype(dtype, where, stored_dtype(path) if path is not None else None)
