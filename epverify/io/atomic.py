"""Atomic file writes: every file epverify writes appears whole or not at all, so an interrupted run never leaves
half a circuit, config or checkpoint behind that looks like a finished one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_file(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Run `write(tmp)` on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_file(path, lambda tmp: tmp.write_text(text))
