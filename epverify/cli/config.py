"""TOML config files: any flag of a command can come from one (`--config FILE.toml`), and `prune` saves the
settings it ran with as one (`run.toml`). Keys are the flags' long names without the dashes (`target-sparsity` or
`target_sparsity`); flags on the command line win over the file."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EpverifyError
from ..io import atomic
from .options import Option

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib


def read_toml(path: Path) -> dict:
    """The parsed file, or a one-line error naming what is wrong with it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise EpverifyError(f"config file {path} does not exist: give the path of a TOML file") from None
    except IsADirectoryError:
        raise EpverifyError(f"config file {path} is a directory: give the path of a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise EpverifyError(f"config file {path} is not valid TOML ({err}): fix the line it names") from None
    except OSError as err:
        raise EpverifyError(f"config file {path} cannot be read ({err.strerror}): check the path and permissions")\
            from None


def config_values(values: dict, options: list[Option], path: Path, command: str) -> dict:
    """A config file's values, checked and converted as their flags would be: {setting name: value}."""
    known = {o.name: o for o in options if o.in_config}
    out = {}
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        if key not in known or isinstance(value, dict):
            names = ", ".join(k.replace("_", "-") for k in known)
            raise EpverifyError(f"{path}: unknown setting {raw_key!r} for epverify {command}; known: {names}")
        out[key] = _checked(known[key], raw_key, value, path)
    return out


def _checked(option: Option, key: str, value, path: Path):
    if option.switch:
        if not isinstance(value, bool):
            raise EpverifyError(f"{path}: {key} must be true or false, not {value!r}")
        return value
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[option.type]
    if not ok(value):
        want = {int: "an integer", float: "a number", str: "a string"}[option.type]
        raise EpverifyError(f"{path}: {key} must be {want}, not {value!r}")
    value = option.type(value)
    if option.choices is not None and value not in option.choices:
        raise EpverifyError(f"{path}: {key} = {value!r} is not one of {', '.join(map(str, option.choices))}")
    return value


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_toml(path: Path, values: dict, header: str) -> None:
    text = f"# {header}\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
    atomic.write_text(path, text)
