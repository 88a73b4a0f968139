"""`epverify compare`: the four methods on one model and task in one table and plot; compiled programs and trained
models against their ground truth; a compare that resumes (after a kill) where it stopped."""

import json

import pytest
from sigkill import run, run_killed

from epverify.adapters import wrap_pretrained
from epverify.adapters.registry import Sizes, family
from epverify.cli import main
from epverify.io import checkpoint
from epverify.io.circuit import Circuit
from epverify.io.eap_ig import eap_ig_edge_order
from epverify.tasks import get_task
from epverify.tasks.tokenizer import build_word_tokenizer

TRAIN = ["--steps", "40", "--batch-size", "4", "--examples", "8", "--target-sparsity", "0.6", "--quiet",
         "--no-draw", "--device", "cpu"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("compare") / "gpt2"
    tokenizer = build_word_tokenizer(get_task("ioi").vocabulary())
    family("gpt2").tiny_model(Sizes(n_heads=2, head_dim=8, vocab=len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_compare_runs_the_four_methods_into_one_table_and_plot_and_keeps_finished_methods(model, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--model", str(model), "--task", "ioi", *TRAIN, "--out", str(out),
                 "--json", str(tmp_path / "table.json")]) == 0
    printed = capsys.readouterr().out
    assert "method 4/4: acdc" in printed and "every method's top" in printed
    report = json.loads((out / "compare.json").read_text())
    assert json.loads((tmp_path / "table.json").read_text()) == report
    assert [r["method"] for r in report["rows"]] == ["edge-pruning", "eap", "eap-ig", "acdc"]
    ep = Circuit.from_json(out / "edge-pruning" / "circuit.json")  # the prune run compare made
    assert report["k"] == len(ep.edges) == report["rows"][0]["edges"]
    for row in report["rows"]:
        assert 0 <= row["kl_at_k"] and row["k"] == report["k"] and row["seconds"] >= 0
        assert len(row["curve"]["counts"]) == len(row["curve"]["logit_diff"]) > 5
        assert row["cpr"] == pytest.approx(row["cpr"]) and "precision" not in row  # no ground truth here
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # every cell exports to MIB: every edge scored, non-negative, in the method's own order (MIB ranks |score|)
    for method in ("eap-ig", "acdc"):
        mine = Circuit.from_json(out / method / "circuit.json")
        raw = json.loads((out / method / "result.json").read_text())["scores"]
        shift = min(0.0, min(raw))
        assert list(mine.scores.values()) == pytest.approx([r - shift for r in raw])  # edge order, shifted
        assert min(mine.scores.values()) >= 0
        assert main(["export", str(out / method / "circuit.json"), "--to", "mib", "--task", "ioi", "--model-name",
                     "gpt2", "--out", str(tmp_path / f"mib-{method}")]) == 0
        importances = json.loads((tmp_path / f"mib-{method}" / "ioi_gpt2" / "importances.json").read_text())
        graph = wrap_pretrained(model, device="cpu").graph
        assert list(importances["edges"]) != [] and set(importances["edges"]) == set(eap_ig_edge_order(graph))

    assert main(["compare", "--model", str(model), "--task", "ioi", *TRAIN, "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert again.count("finished before, kept") == 4
    assert json.loads((out / "compare.json").read_text()) == report


def test_compare_on_a_compiled_program_and_a_trained_model_reports_the_ground_truth(tmp_path, capsys):
    out = tmp_path / "hist"
    assert main(["compare", "--model", "hist", "--methods", "edge-pruning,eap,acdc", "--out", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["truth_edges"] == 4
    ep = report["rows"][0]
    assert (ep["precision"], ep["recall"], ep["auc"]) == (1.0, 1.0, 1.0)  # what `epverify recover hist` finds
    assert all(0 <= r["auc"] <= 1 for r in report["rows"])

    trained = tmp_path / "trained"
    assert main(["compare", "--model", "trained_models/hist_gpt2", "--task", "card", "--methods", "eap,eap-ig",
                 "--out", str(trained), "--device", "cpu"]) == 0
    report = json.loads((trained / "compare.json").read_text())
    assert report["truth_edges"] == report["k"] > 0  # no Edge Pruning: the truth's size
    assert all("auc" in r for r in report["rows"])


def test_acdc_stops_at_its_time_budget_and_says_so(model, tmp_path, capsys):
    out = tmp_path / "acdc"
    assert main(["compare", "--model", str(model), "--task", "ioi", *TRAIN, "--methods", "acdc",
                 "--acdc-max-seconds", "1e-9", "--out", str(out)]) == 0
    assert "stopped early" in capsys.readouterr().out
    assert json.loads((out / "compare.json").read_text())["rows"][0]["stopped_early"] is True


@pytest.mark.parametrize("flags, message", [
    (["--methods", "eap,magic"], "--methods eap,magic: choose from edge-pruning, eap, eap-ig, acdc"),
    (["--acdc-max-seconds", "-1"], "give seconds, or 0 for no limit"),
])
def test_bad_compare_options_get_one_line(model, tmp_path, capsys, flags, message):
    assert main(["compare", "--model", str(model), "--task", "ioi", *TRAIN, *flags, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("epverify: error:") and message in err[0]


def test_a_compare_killed_during_edge_pruning_resumes_it_to_the_same_circuit(model, tmp_path):
    flags = ["--model", str(model), "--task", "ioi", "--steps", "150", "--batch-size", "4", "--examples", "8",
             "--target-sparsity", "0.6", "--checkpoint-every", "5", "--no-draw", "--quiet", "--device", "cpu"]
    assert main(["prune", *flags, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "cmp"
    argv = ["compare", *flags, "--methods", "edge-pruning,eap", "--out", str(out)]
    assert run_killed(argv, out / "edge-pruning" / checkpoint.FILENAME) < 150
    assert not (out / "compare.json").exists()

    result = run(argv)
    assert result.returncode == 0, result.stderr
    assert "resuming Edge Pruning from its checkpoint" in result.stdout
    resumed = Circuit.from_json(out / "edge-pruning" / "circuit.json")
    whole = Circuit.from_json(tmp_path / "whole" / "circuit.json")
    assert resumed.edges == whole.edges
    history = json.loads((out / "edge-pruning" / "metrics.json").read_text())["history"]
    assert history == json.loads((tmp_path / "whole" / "metrics.json").read_text())["history"]
