"""docs/cli.md is the argument parser's own description: regenerate it with `make docs` when a flag changes."""

from pathlib import Path

from epverify.cli import build_parser, reference_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_reference_matches_the_parser():
    assert DOC.read_text() == reference_markdown(), "docs/cli.md is stale: run `make docs`"


def test_every_flag_of_every_subcommand_is_documented():
    text = DOC.read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert f"## epverify {name}" in text
        for action in p._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in text, f"{name} {option}"
