"""A user's own prompt pairs from a JSON Lines file.

Each non-blank line is an object ``{"clean": str, "corrupted": str, "target": str, "distractor": str}``; any
other keys are kept in ``Example.extras``.  The file is read and checked when the task is created.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .base import Example, Task, TaskError, check_count, words_of

REQUIRED_KEYS = ("clean", "corrupted", "target", "distractor")


class JsonlTask(Task):
    """Prompt pairs read from a JSONL file (``path=...``); ``examples(n)`` gives the first n in file order."""

    name = "jsonl"

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            raise TaskError("task 'jsonl' needs a file: pass path=FILE.jsonl")
        self.path = Path(path)
        self._examples = load_jsonl(self.path)

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        """The file's first ``n`` examples (all of them if the file has fewer); ``seed`` is not used."""
        check_count(self.name, n)
        return [replace(e, extras=dict(e.extras)) for e in self._examples[:n]]

    def __len__(self) -> int:
        return len(self._examples)

    def vocabulary(self) -> list[str]:
        texts = [text for e in self._examples for text in (e.clean, e.corrupted, e.target, e.distractor)]
        return words_of(*texts)


def load_jsonl(path: Path) -> list[Example]:
    """Read and check a JSONL file of prompt pairs; every problem is a one-line TaskError naming the line."""
    if not path.is_file():
        raise TaskError(f"task 'jsonl': file not found: {path}; pass path= an existing .jsonl file")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise TaskError(f"task 'jsonl': {path} is not UTF-8 text; expected a JSON Lines file") from None
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise TaskError(
                f"{path}:{number}: not valid JSON ({error.msg}); expected one JSON object per line"
            ) from None
        if not isinstance(record, dict):
            raise TaskError(f"{path}:{number}: expected a JSON object with keys {', '.join(REQUIRED_KEYS)}")
        missing = [key for key in REQUIRED_KEYS if key not in record]
        if missing:
            raise TaskError(
                f"{path}:{number}: missing key(s) {', '.join(missing)}; "
                f"each line needs {', '.join(REQUIRED_KEYS)}"
            )
        wrong = [key for key in REQUIRED_KEYS if not isinstance(record[key], str)]
        if wrong:
            raise TaskError(f"{path}:{number}: key(s) {', '.join(wrong)} must be strings")
        extras = {key: value for key, value in record.items() if key not in REQUIRED_KEYS}
        examples.append(Example(*(record[key] for key in REQUIRED_KEYS), extras=extras))
    if not examples:
        sample = json.dumps(dict.fromkeys(REQUIRED_KEYS, "..."))
        raise TaskError(f"task 'jsonl': {path} has no examples; add lines like {sample}")
    return examples
