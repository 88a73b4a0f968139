"""A command of the command line: its declaration, and how its settings are resolved."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

from .options import CONFIG, Option


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    options: tuple[Option, ...]
    run: Callable  # (settings) -> exit status
    takes_config: bool = True  # the --config flag (`gate` reads its own TOML instead)

    @property
    def all_options(self) -> tuple[Option, ...]:
        return (*self.options, CONFIG) if self.takes_config else self.options


class Settings(SimpleNamespace):
    """The resolved settings of one command: every option's value, and the names given on the command line or in
    its --config file (`given`)."""

    given: frozenset = frozenset()


def resolve(command: Command, explicit: dict, file_values: dict | None = None) -> Settings:
    """Command line over config file over defaults."""
    values = {o.name: (False if o.switch else o.default) for o in command.all_options}
    values.update(file_values or {})
    values.update(explicit)
    return Settings(**values, given=frozenset(explicit) | frozenset(file_values or {}))
