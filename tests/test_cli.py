"""The command line: zoo listing, recovery of shipped and user programs, one-line errors."""

import textwrap

import pytest

from epverify.cli import build_parser, main


def test_zoo_lists_every_program_with_its_truth(capsys):
    assert main(["zoo"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) >= 15  # header + programs
    assert any(line.startswith("reverse ") for line in lines)


def test_unknown_program_lists_the_known_ones(capsys):
    assert main(["recover", "no_such_program"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "reverse" in err and "xproportion" in err


def test_user_file_program_needs_vocab_and_length(tmp_path, capsys):
    source = tmp_path / "prog.py"
    source.write_text("def make():\n    return None\n")
    assert main(["recover", f"{source}:make"]) == 2
    assert "--vocab" in capsys.readouterr().err


def test_user_file_program_that_tracr_cannot_compile_is_reported(tmp_path, capsys):
    pytest.importorskip("tracr")
    source = tmp_path / "bad.py"
    source.write_text(textwrap.dedent("""
        from tracr.rasp import rasp
        def make():
            sel = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
            return rasp.Aggregate(sel, rasp.Map(lambda x: x, rasp.tokens), default=0).named("broken")
    """))
    assert main(["recover", f"{source}:make", "--vocab", "1,2", "--max-seq-len", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken" in err


def test_every_subcommand_has_help():
    parser = build_parser()
    for name in ("recover", "zoo", "prune"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
