"""The `epverify` command line: one console script, one module per subcommand.

Each command module declares a `COMMAND` (`epverify.cli.command.Command`): its name, help, options
(`epverify.cli.options`) and the function that runs it on the resolved settings. A setting comes from the command
line, else from the `--config` TOML file, else from its option's default. Every user error (EpverifyError) is
printed as one line and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EpverifyError
from . import compare, draw, evaluate, export, gate, prune, recover, sweep, zoo
from .command import Command, resolve
from .config import config_values, read_toml
from .options import Option


def commands() -> list[Command]:
    return [recover.COMMAND, prune.COMMAND, sweep.COMMAND, compare.COMMAND, zoo.COMMAND, draw.COMMAND, export.COMMAND,
            evaluate.COMMAND, gate.COMMAND]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `epverify: error: ...` naming the --help to read, exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # a flag's full name, so a config file can tell what was given
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        where = self.prog.removeprefix("epverify").strip()
        self.exit(2, f"epverify: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def _help(option: Option) -> str:
    shown = option.default not in (None, False)
    return option.help + (f" (default: {option.default})" if shown and option.flag.startswith("--") else "")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; a flag not on the command line is absent from the parsed namespace."""
    parser = _Parser(prog="epverify", description="Edge Pruning circuit discovery, verified.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in commands():
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        for option in command.all_options:
            kwargs = {"help": _help(option), "default": argparse.SUPPRESS}
            if option.switch:
                kwargs["action"] = "store_true"
            else:
                kwargs.update(type=option.type, choices=option.choices, metavar=option.metavar)
            p.add_argument(option.flag, **kwargs)
    return parser


def reference_markdown() -> str:
    """docs/cli.md: every subcommand with its flags, made from the option declarations (a test keeps the file in
    sync; regenerate with `make docs`)."""
    lines = ["# Command-line reference", "",
             "Generated from the option declarations by `make docs` (`epverify.cli.reference_markdown`); a test",
             "fails when this file and the parser disagree. Every flag can also come from a TOML file given with",
             "`--config` (keys are the flag names without the leading dashes; flags on the command line win). User",
             "errors print one line, `epverify: error: ...`, and exit with status 2.", ""]
    for command in commands():
        lines += [f"## epverify {command.name}", "", command.help, "", command.description, "",
                  "| argument | default | meaning |", "|---|---|---|"]
        for option in command.all_options:
            flag = f"`{option.flag}`" + (" (positional)" if option.positional else "")
            if option.choices is not None:
                flag += " {" + ", ".join(map(str, option.choices)) + "}"
            default = "" if option.default in (None, False) or option.positional else f"`{option.default}`"
            lines.append(f"| {flag} | {default} | {option.help.replace('|', chr(92) + '|')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    explicit = vars(build_parser().parse_args(argv))
    name = explicit.pop("command")
    command = next(c for c in commands() if c.name == name)
    try:
        file_values = None
        if command.takes_config and explicit.get("config"):
            path = Path(explicit["config"])
            file_values = config_values(read_toml(path), list(command.options), path, command.name)
        return command.run(resolve(command, explicit, file_values))
    except EpverifyError as err:
        print(f"epverify: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file the command reads or writes, not caught closer to where it happened
        where = f" {err.filename}" if err.filename else ""
        print(f"epverify: error: cannot use{where}: {err.strerror or err}; check the path and the disk",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("epverify: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
