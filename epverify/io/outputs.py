"""Writing a command's outputs so that a failed command never destroys what was there.

`Outputs(directory)` is a run's output directory while a command writes it: a lock (`.lock`) refuses a second
command writing the same directory at once; new files are written into a staging directory beside them
(`.tmp-<pid>`) and moved over the old ones only when all are complete (`commit`, in the order given: `circuit.json`
last, so a directory with `circuit.json` holds a finished run). A command that fails before `commit` leaves every
file it found as it was. `write_new(path, ...)` is the same for a single file (a JSON report, an export).
`check_not_input(out, *inputs)` refuses an output that would overwrite one of the command's inputs.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from ..errors import EpverifyError
from .atomic import io_error, write_file

LOCK = ".lock"


def check_not_input(out: Path | str, *inputs) -> None:
    """Refuse to write `out` when it is one of the inputs (or a directory holding one)."""
    out = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if source == out or out in source.parents:
            raise EpverifyError(f"the output {out} would overwrite the input {given}: write the result elsewhere")


def make_dir(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise EpverifyError(f"{directory} is a file: give a directory for the outputs")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise io_error(err, directory, "create the directory") from None


class Outputs:
    """A locked output directory with its staging directory (module docstring)."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.staging = self.directory / f".tmp-{os.getpid()}"
        self.locked = False

    def __enter__(self) -> Outputs:
        make_dir(self.directory)
        self._lock()
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            self.staging.mkdir()
        except OSError as err:
            self._unlock()
            raise io_error(err, self.staging, "create the directory") from None
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self._unlock()

    def path(self, name: str) -> Path:
        """Where a new file is written before `commit`."""
        return self.staging / name

    def commit(self, order: list[str], stale=()) -> None:
        """Move the staged files over the directory's, in `order` (the last one marks the outputs complete); the
        files named in `stale` that this command did not write are removed before that last one."""
        ordered = [n for n in order if (self.staging / n).exists()]
        staged = sorted(p.name for p in self.staging.iterdir() if p.name not in ordered) + ordered
        try:
            for name in staged[:-1]:
                os.replace(self.staging / name, self.directory / name)
            for name in stale:
                if name not in staged:
                    (self.directory / name).unlink(missing_ok=True)
            if staged:
                os.replace(self.staging / staged[-1], self.directory / staged[-1])
        except OSError as err:
            raise io_error(err, self.directory) from None

    # ----- the lock -----------------------------------------------------------------------------------------
    def _lock(self) -> None:
        path = self.directory / LOCK
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not _stale(path):
                    owner = path.read_text().strip() or "another process"
                    raise EpverifyError(f"{self.directory} is being written by another epverify command ({owner}):"
                                        f" wait for it to finish or choose another --out; if it is not running,"
                                        f" delete {path}") from None
                path.unlink(missing_ok=True)
                continue
            except OSError as err:
                raise io_error(err, path) from None
            with os.fdopen(fd, "w") as f:
                f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            self.locked = True
            return

    def _unlock(self) -> None:
        if self.locked:
            (self.directory / LOCK).unlink(missing_ok=True)
            self.locked = False


def _stale(lock: Path) -> bool:
    """A lock left by a process of this machine that no longer runs."""
    try:
        words = lock.read_text().split()
        pid, host = int(words[1]), words[3]
    except (OSError, ValueError, IndexError):
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def write_new(path: Path | str, write, inputs=()) -> Path:
    """Write one output file through `write(tmp_path)`, never over one of `inputs`, replacing the old file only
    when the new one is complete."""
    path = Path(path)
    check_not_input(path, *inputs)
    make_dir(path.parent)
    return write_file(path, write)
