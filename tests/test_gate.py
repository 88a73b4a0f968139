"""`epverify gate`: passes on the engine, fails with a readable report when a threshold is out of reach, and
rejects a bad config in one line that names the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from epverify.cli import main
from epverify.testing.gate import load_config
from epverify.tracr import zoo

CI_DIR = Path(__file__).resolve().parents[1] / "ci"

QUICK = """
name = "quick"
programs = ["count", "shift_by"]
ablations = ["interchange"]
seeds = [0]

[thresholds]
min_exact_fraction = 1.0
min_precision = 1.0
min_recall = 1.0
max_faithfulness = 1e-3
min_accuracy = 1.0
"""


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "gate.toml"
    path.write_text(text)
    return str(path)


def test_the_gate_passes_on_small_programs(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["gate", _write(tmp_path, QUICK), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "gate quick PASSED: all 5 checks" in text and "FAIL" not in text
    assert sum(line.endswith("  PASS") for line in text.splitlines()) == 5
    report = json.loads(out.read_text())
    assert report["passed"] and [r["program"] for r in report["runs"]] == ["count", "shift_by"]


def test_an_unreachable_threshold_fails_with_a_readable_report(tmp_path, capsys):
    config = QUICK.replace('["count", "shift_by"]', '["count"]')
    config = config.replace("min_accuracy = 1.0", "min_accuracy = 1.1")  # accuracy is at most 1
    assert main(["gate", _write(tmp_path, config)]) == 1
    lines = capsys.readouterr().out.splitlines()
    accuracy = next(line for line in lines if line.startswith("accuracy"))
    assert accuracy.endswith("FAIL") and ">= 1.100" in accuracy and "can never be met" in accuracy
    run = next(line for line in lines if line.startswith("count"))
    assert "FAIL accuracy" in run
    assert lines[-1] == "gate quick FAILED: 1 of 5 checks fell short (min_accuracy = 1.100)"
    # the other checks still pass and say so
    assert sum(line.endswith("PASS") for line in lines) == 4


@pytest.mark.parametrize("text, key", [
    ('programs = ["count"]\nthreshold = {}\n', "threshold"),
    ('programs = ["count"]\n[thresholds]\nmin_precison = 1.0\n', "thresholds.min_precison"),
    ('programs = ["count"]\n[thresholds]\nmin_recall = "high"\n', "thresholds.min_recall"),
    ('programs = ["no_such_program"]\n[thresholds]\nmin_recall = 1.0\n', "programs"),
    ('programs = ["count"]\nablations = ["resample"]\n[thresholds]\nmin_recall = 1.0\n', "ablations"),
    ('programs = ["count"]\nseeds = [-1]\n[thresholds]\nmin_recall = 1.0\n', "seeds"),
    ('programs = ["count"]\n', "thresholds"),
])
def test_a_bad_config_is_one_line_naming_the_key(tmp_path, capsys, text, key):
    assert main(["gate", _write(tmp_path, text)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"bad key {key!r}" in err[0]


def test_invalid_toml_and_a_missing_file_are_reported(tmp_path, capsys):
    assert main(["gate", _write(tmp_path, "programs = [\n")]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["gate", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_shipped_ci_configs_are_valid():
    quick, full = load_config(CI_DIR / "tracr-quick.toml"), load_config(CI_DIR / "tracr-zoo.toml")
    assert 3 <= len(quick.programs) <= 4 and full.programs == zoo.names()
    assert quick.thresholds["min_exact_fraction"] == 1.0


def test_gate_has_help():
    with pytest.raises(SystemExit) as info:
        main(["gate", "--help"])
    assert info.value.code == 0


def test_the_gate_runs_a_trained_model_as_prune_runs_it(tmp_path, capsys):
    """A trained model's directory in `programs` is recovered with `epverify prune`'s estimator and defaults and
    compared with its card's circuit; "trained" names every shipped one."""
    from epverify.trained.card import ROOT as TRAINED
    from epverify.trained.card import shipped

    config = QUICK.replace('["count", "shift_by"]', f'["{TRAINED / "first_token_gpt2"}"]')
    out = tmp_path / "report.json"
    assert main(["gate", _write(tmp_path, config), "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"][0]
    assert run["program"] == "first_token_gpt2" and run["exact"] and run["estimator"] == "pathwise"
    assert load_config(_write(tmp_path, config.replace(f'["{TRAINED / "first_token_gpt2"}"]', '"trained"'))) \
        .programs == [str(p) for p in shipped()]
