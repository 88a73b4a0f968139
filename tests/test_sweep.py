"""`epverify sweep`: one prune run per target and seed, the table, IoU and consensus, the knee's circuit, and a sweep
that resumes where it stopped."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from epverify.cli import main
from epverify.cli.sweep import knee, sub_run_dir
from epverify.io.circuit import Circuit
from epverify.tasks import get_task
from epverify.tasks.tokenizer import build_word_tokenizer

ARGS = ["--task", "ioi", "--steps", "60", "--warmup-steps", "30", "--batch-size", "4", "--examples", "8",
        "--target-sparsity", "0.3,0.6,0.9", "--seeds", "0,1", "--quiet", "--checkpoint-every", "20", "--no-draw",
        "--redundancy-tolerance", "0", "--max-edge-price", "0"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "gpt2"
    tokenizer = build_word_tokenizer(get_task("ioi").vocabulary())
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=2, n_head=2,
                               initializer_range=0.5)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_sweep_writes_its_table_consensus_knee_and_plot_and_resumes(model, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--model", str(model), *ARGS, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "run 6/6: target 0.9, seed 1" in printed and "<- knee" in printed
    report = json.loads((out / "sweep.json").read_text())
    assert [(r["target"], r["seed"]) for r in report["runs"]] == [(t, s) for t in (0.3, 0.6, 0.9) for s in (0, 1)]
    for row in report["runs"]:
        saved = Circuit.from_json(sub_run_dir(out, row["target"], row["seed"]) / "circuit.json")
        assert row["edges"] == len(saved.edges) and "kl" in row
    for entry in report["per_target"]:
        found = [set(map(tuple, Circuit.from_json(sub_run_dir(out, entry["target"], s) / "circuit.json").edges))
                 for s in (0, 1)]
        agreed = set(map(tuple, Circuit.from_json(entry["consensus_file"]).edges))
        assert agreed == found[0] & found[1]  # a majority of two seeds is both
        union = found[0] | found[1]
        assert entry["iou"]["mean_iou"] == pytest.approx(len(found[0] & found[1]) / len(union) if union else 1.0)
    recommended = Circuit.from_json(out / "recommended.json")
    assert recommended.metrics["sweep_knee_target"] == report["knee_target"]
    assert (out / "sweep.png").stat().st_size > 0

    # a sweep stopped during a run: that run's circuit never written, its checkpoint there; the others finished
    stopped = sub_run_dir(out, 0.6, 1)
    (stopped / "circuit.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in out.glob("target*/circuit.json")}
    assert main(["sweep", "--model", str(model), *ARGS, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished before, kept") == 5
    assert "run 4/6: target 0.6, seed 1 (resuming from its checkpoint)" in printed
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished runs untouched
    assert (stopped / "circuit.json").is_file()
    again = json.loads((out / "sweep.json").read_text())["runs"]
    timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in runs] for runs in (again, report["runs"])]
    assert timeless[0] == timeless[1]  # the same sweep


@pytest.mark.parametrize(("argv", "expected"), [
    (["--target-sparsity", "0.9,high"], "comma-separated numbers"),
    (["--target-sparsity", "0.9,2.0"], "out of range"),
    (["--seeds", "0,0"], "each once"),
    (["--consensus", "3"], "from 1 to 2"),
])
def test_bad_sweep_settings_are_one_line(model, tmp_path, capsys, argv, expected):
    args = ["sweep", "--model", str(model), "--task", "ioi", "--seeds", "0,1", "--out", str(tmp_path / "s"), *argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("epverify: error:") and expected in err[0], err


def test_the_knee_is_where_the_curve_bends():
    # (edges, KL): steep below 20 edges, flat above
    points = [(5, 4.0), (10, 2.0), (20, 0.2), (40, 0.15), (80, 0.1)]
    assert knee(points) == 2
    assert knee([(5, 1.0), (50, 0.01)]) == 1  # two points: the smallest within 10% of the best KL
    # a curve that only drops at its dense end (nothing below the chord): the smallest circuit near the best KL
    assert knee([(0, 0.91), (1, 0.90), (16, 0.23)]) == 2
    assert knee([(3, 0.5), (3, 0.5), (3, 0.5)]) == 0


def test_a_sweep_killed_during_a_run_resumes_to_the_uninterrupted_sweep(model, tmp_path):
    """SIGKILL from outside during the second sub-run: the first is kept, the second resumes from its checkpoint,
    and the sweep's table equals an uninterrupted sweep's."""
    from sigkill import run, run_killed

    from epverify.io import checkpoint

    flags = ["--model", str(model), "--task", "ioi", "--steps", "150", "--batch-size", "4", "--examples", "8",
             "--target-sparsity", "0.3,0.6", "--seeds", "0", "--checkpoint-every", "5", "--no-draw", "--quiet",
             "--device", "cpu"]
    assert main(["sweep", *flags, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    assert run_killed(["sweep", *flags, "--out", str(out)], sub_run_dir(out, 0.6, 0) / checkpoint.FILENAME) < 150
    result = run(["sweep", *flags, "--out", str(out)])
    assert result.returncode == 0, result.stderr
    assert "run 1/2: target 0.3, seed 0: finished before, kept" in result.stdout
    assert "run 2/2: target 0.6, seed 0 (resuming from its checkpoint)" in result.stdout
    runs = [[{k: v for k, v in r.items() if k not in ("seconds", "dir")} for r in
             json.loads((d / "sweep.json").read_text())["runs"]] for d in (out, tmp_path / "whole")]
    assert runs[0] == runs[1]
