"""The command line: zoo listing, recovery of shipped and user programs, one-line errors."""

import json
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


def test_user_file_program_is_recovered_exactly(tmp_path, capsys, monkeypatch):
    """A RASP program written in the user's own file goes through FILE.py:FUNCTION and is recovered exactly,
    saying what runs and where the time went."""
    pytest.importorskip("tracr")
    monkeypatch.setattr("epverify.cli.recover.SLOW", 0.0)  # say where the time went however fast it was
    source = tmp_path / "mine.py"
    source.write_text(textwrap.dedent("""
        from tracr.rasp import rasp

        def make():
            previous = rasp.Select(rasp.indices, rasp.indices, lambda key, query: key == query - 1)
            shifted = rasp.categorical(rasp.Aggregate(previous, rasp.tokens)).named("shifted")
            same = rasp.SequenceMap(lambda x, y: x if x == y else 0, rasp.tokens, shifted)
            return rasp.categorical(same).named("same")
    """))
    report_path = tmp_path / "report.json"
    code = main(["recover", f"{source}:make", "--vocab", "1,2,3", "--max-seq-len", "4", "--json", str(report_path)])
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert code == 0, out
    assert "mine:make" in out and "recovered exactly: 1/1" in out
    assert "compiled" in err and "ground truth under interchange ablation" in err and "step    500/500" in err
    (times,) = [line for line in err.splitlines() if line.startswith("time: ")]
    assert [part.split()[0] for part in times[6:].split(", ")] == ["compile", "ground", "training"]
    (report,) = json.loads(report_path.read_text())
    assert report["truth_edges"] and sorted(report["found_edges"]) == sorted(report["truth_edges"])
    assert report["exact"] and not report["empty"]


def test_a_shipped_program_is_recovered_under_zero_ablation(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    code = main(["recover", "shift_by", "--ablation", "zero", "--json", str(report_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    (report,) = json.loads(report_path.read_text())
    assert report["ablation"] == "zero" and report["exact"] and report["truth_edges"]


def test_balance_reaches_the_dataset_recipe_of_a_user_program(tmp_path, monkeypatch, capsys):
    """`--balance` on FILE.py:FUNCTION compiles the program with a recipe that balances its outputs."""
    pytest.importorskip("tracr")
    import epverify.tracr.compile as compile_module
    from epverify.errors import EpverifyError

    real, recipes = compile_module.compile_rasp, []

    def compile_and_stop(*args, **kwargs):
        recipes.append(real(*args, **kwargs).dataset)
        raise EpverifyError("stopped after compiling")

    monkeypatch.setattr(compile_module, "compile_rasp", compile_and_stop)
    source = tmp_path / "eq.py"
    source.write_text("from tracr.compiler import lib\n\ndef make():\n    return lib.make_hist()\n")
    for flag in (["--balance"], []):
        assert main(["recover", f"{source}:make", "--vocab", "a,b,c", "--max-seq-len", "4", *flag]) == 2
        assert "stopped after compiling" in capsys.readouterr().err
    assert [bool(r.get("balance")) for r in recipes] == [True, False]
