"""The command line: `main` parses, resolves the settings and runs one command module (docs/cli.md)."""

from .main import build_parser, main, reference_markdown

__all__ = ["build_parser", "main", "reference_markdown"]
