"""Tracr programs compiled to weights, with ground-truth circuits. Loading needs no JAX; compiling does."""

from __future__ import annotations

from pathlib import Path

from ..errors import EpverifyError
from .compile import compile_rasp
from .model import CompiledModel
from .zoo import ROOT, names


def load(name_or_path: str | Path) -> CompiledModel:
    """A shipped program by name (see `epverify zoo`) or a compiled-model directory."""
    path = Path(name_or_path)
    if not path.is_dir():
        if str(name_or_path) not in names():
            raise EpverifyError(f"unknown program {name_or_path!r}: known programs are {', '.join(names())}")
        path = ROOT / str(name_or_path)
    return CompiledModel.load(path)


__all__ = ["CompiledModel", "compile_rasp", "load", "names"]
