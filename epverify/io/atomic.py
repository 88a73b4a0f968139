"""Atomic file writes: every file epverify writes appears whole or not at all, so an interrupted run never leaves
half a circuit, config or checkpoint behind that looks like a finished one, and a failed write (a full disk, a
read-only file system) is one line and leaves the file that was there as it was."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import EpverifyError


def io_error(err: OSError, path: Path | str, doing: str = "write") -> EpverifyError:
    """One line for a failed write: what, where, why, and that the files already there are untouched."""
    why = {errno.ENOSPC: "no space left on the device", errno.EROFS: "the file system is read-only",
           errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.ENOTDIR: "a part of the path is a"
           " file, not a directory", errno.EDQUOT: "disk quota exceeded"}.get(err.errno, err.strerror or str(err))
    return EpverifyError(f"cannot {doing} {path}: {why}; the files already there are untouched (free space, or"
                         " choose another path)")


def write_file(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Run `write(tmp)` on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise io_error(err, path) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_file(path, lambda tmp: tmp.write_text(text))
