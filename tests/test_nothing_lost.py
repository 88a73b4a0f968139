"""Nothing lost, nothing silent: a failed command leaves every file it found as it was, no command writes over its
own input, one command at a time writes an --out, a full disk is one line, dropped examples and missed targets are
said, and SIGINT or SIGTERM leave a checkpoint and the command that resumes it."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
)

from epverify.adapters.registry import Sizes, families, family
from epverify.cli import main
from epverify.io import checkpoint
from epverify.tasks import get_task
from epverify.tasks.tokenizer import build_word_tokenizer, load_tokenizer

QUICK = ["--steps", "3", "--batch-size", "2", "--examples", "4", "--quiet", "--no-draw"]


def _gpt2(path, words=None):
    tokenizer = build_word_tokenizer(words or get_task("ioi").vocabulary())
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2)) \
        .save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("nothing_lost")
    model = _gpt2(root / "gpt2")
    finished = root / "finished"
    # no redundancy pass: a 3-step run on random weights needs no edge, and the commands below need a circuit
    assert main(["prune", "--model", str(model), "--task", "ioi", "--steps", "3", "--batch-size", "2",
                 "--examples", "4", "--quiet", "--checkpoint-every", "1", "--redundancy-tolerance", "0",
                 "--out", str(finished)]) == 0
    return root


def _snapshot(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _copy(world, name, tmp_path):
    shutil.copytree(world / name, tmp_path / name)
    return tmp_path / name


def _one_error_line(capsys, expected):
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epverify")]
    assert len(err) == 1 and err[0].startswith("epverify: error: ") and expected in err[0], err


# ----- failed commands leave what they found --------------------------------------------------------------------
@pytest.mark.parametrize("extra", [["--overwrite"], []], ids=["resume-overwrite", "resume"])
def test_resuming_an_unreadable_checkpoint_changes_nothing(world, tmp_path, capsys, extra):
    run = _copy(world, "finished", tmp_path)
    if not extra:
        (run / "circuit.json").unlink()  # an unfinished run: metrics and drawings from an earlier attempt stay
    data = (run / checkpoint.FILENAME).read_bytes()
    (run / checkpoint.FILENAME).write_bytes(data[: len(data) // 3])
    before = _snapshot(run)
    assert main(["prune", "--resume", str(run), "--quiet", *extra]) == 2
    _one_error_line(capsys, "unreadable")
    assert _snapshot(run) == before


def test_an_overwrite_run_that_fails_in_training_keeps_the_finished_results(world, tmp_path, monkeypatch, capsys):
    run = _copy(world, "finished", tmp_path)
    results = {name: (run / name).read_bytes() for name in ("circuit.json", "metrics.json", "circuit.png")}
    from epverify import pipeline

    def failing(*args, **kwargs):
        raise pipeline.EpverifyError("the loss became nan at step 1: training stopped")

    monkeypatch.setattr(pipeline, "prune", failing)
    assert main(["prune", "--model", str(world / "gpt2"), "--task", "ioi", *QUICK, "--overwrite",
                 "--out", str(run)]) == 2
    assert {name: (run / name).read_bytes() for name in results} == results
    assert not list(run.glob(".tmp-*")) and not (run / ".lock").exists()


def test_a_finished_rerun_replaces_the_old_results_and_drops_the_stale_ones(world, tmp_path):
    run = _copy(world, "finished", tmp_path)
    assert (run / "circuit.png").exists()
    assert main(["prune", "--model", str(world / "gpt2"), "--task", "ioi", *QUICK, "--overwrite", "--out",
                 str(run)]) == 0
    assert not (run / "circuit.png").exists()  # --no-draw this time: the old drawing is not passed off as new
    assert json.loads((run / "metrics.json").read_text())["config"]["steps"] == 3


@pytest.mark.parametrize("command", ["export", "evaluate", "draw", "recover", "gate"])
def test_no_command_writes_over_its_own_input(world, tmp_path, capsys, command):
    circuit = tmp_path / "c.json"
    shutil.copy(world / "finished" / "circuit.json", circuit)
    program, config = tmp_path / "prog.py", tmp_path / "gate.toml"
    program.write_text("def make():\n    return None\n")
    config.write_text('programs = ["count"]\n[thresholds]\nmin_recall = 1.0\n')
    argv = {"export": ["export", str(circuit), "--to", "graphml", "--out", str(circuit)],
            "evaluate": ["evaluate", "--model", str(world / "gpt2"), "--task", "ioi", "--examples", "4",
                         "--circuit", str(circuit), "--json", str(circuit)],
            "draw": ["draw", str(circuit), "--out", str(tmp_path / "c"), "--format", "json"],
            "recover": ["recover", f"{program}:make", "--vocab", "a", "--max-seq-len", "2", "--json", str(program)],
            "gate": ["gate", str(config), "--json", str(config)]}[command]
    before = {p: p.read_bytes() for p in (circuit, program, config)}
    assert main(argv) == 2
    _one_error_line(capsys, "would overwrite the input")
    assert {p: p.read_bytes() for p in before} == before


def test_prune_refuses_to_write_into_the_model_directory(world, capsys):
    before = _snapshot(world / "gpt2")
    assert main(["prune", "--model", str(world / "gpt2"), "--task", "ioi", *QUICK, "--out", str(world / "gpt2")]) == 2
    _one_error_line(capsys, "would overwrite the input")
    assert _snapshot(world / "gpt2") == before


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(world, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / ".lock").write_text(f"pid {os.getpid()} on {os.uname().nodename}\n")  # this process: alive
    assert main(["prune", "--model", str(world / "gpt2"), "--task", "ioi", *QUICK, "--out", str(out)]) == 2
    _one_error_line(capsys, "being written by another epverify command")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_a_lock_left_by_a_dead_process_is_taken_over(world, tmp_path):
    out = tmp_path / "stale"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".lock").write_text(f"pid {int(dead.stdout)} on {os.uname().nodename}\n")
    assert main(["prune", "--model", str(world / "gpt2"), "--task", "ioi", *QUICK, "--out", str(out)]) == 0
    assert (out / "circuit.json").exists() and not (out / ".lock").exists()


def _full_disk(monkeypatch, after: int = 0):
    """From the `after`-th replace on, every atomic rename fails as on a full disk."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) > after:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("command", ["prune", "export", "evaluate", "draw", "recover", "gate"])
def test_a_full_disk_is_one_line_and_earlier_files_stay(world, tmp_path, monkeypatch, capsys, command):
    run = _copy(world, "finished", tmp_path)
    config = tmp_path / "gate.toml"
    config.write_text('programs = ["count"]\nseeds = [0]\n[thresholds]\nmin_recall = 1.0\n')
    out = {"export": run / "circuit.graphml", "evaluate": run / "metrics.json", "draw": run / "circuit",
           "recover": run / "metrics.json", "gate": run / "metrics.json", "prune": run}[command]
    argv = {"prune": ["prune", "--model", str(world / "gpt2"), "--task", "ioi", *QUICK, "--overwrite", "--out",
                      str(run)],
            "export": ["export", str(run / "circuit.json"), "--to", "graphml", "--out", str(out)],
            "evaluate": ["evaluate", "--model", str(world / "gpt2"), "--task", "ioi", "--examples", "4",
                         "--circuit", str(run / "circuit.json"), "--json", str(out)],
            "draw": ["draw", str(run / "circuit.json"), "--out", str(out)],
            "recover": ["recover", "count", "--json", str(out)],
            "gate": ["gate", str(config), "--json", str(out)]}[command]
    before = _snapshot(run)
    # prune writes its run.toml before its results (no checkpoint in 3 steps); the others write their result first
    _full_disk(monkeypatch, after=1 if command == "prune" else 0)
    assert main(argv) == 2
    _one_error_line(capsys, "no space left on the device")
    after = _snapshot(run)
    for name in ("circuit.json", "metrics.json", "circuit.png", "circuit.svg"):
        assert after[Path(name)] == before[Path(name)], name


@pytest.mark.parametrize("out", ["under_a_file", "/proc/epverify-run", "read_only"])
def test_an_out_that_cannot_be_written_is_one_line(world, tmp_path, monkeypatch, capsys, out):
    if out == "under_a_file":
        (tmp_path / "plain").write_text("x")
        target = tmp_path / "plain" / "run"
    elif out == "read_only":
        target = tmp_path / "ro" / "run"
        real = os.mkdir

        def read_only(path, *args, **kwargs):
            if str(path).startswith(str(tmp_path / "ro")):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", read_only)
    else:
        target = out
    assert main(["prune", "--model", str(world / "gpt2"), "--task", "ioi", *QUICK, "--out", str(target)]) == 2
    _one_error_line(capsys, str(target).rsplit("/", 1)[0])


# ----- what was dropped, what was missed ------------------------------------------------------------------------
def _tiny(name: str, vocab: int):
    return family(name).tiny_model(Sizes(n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, d_model=16, vocab=vocab))


@pytest.mark.parametrize("name", sorted(families()))
def test_a_tokenizer_the_package_builds_loads_back_as_itself_beside_every_family(tmp_path, name):
    """transformers reads a word-level tokenizer saved beside a Qwen2 model as Qwen2's byte-level BPE (it
    splits "Then, Mary and Lisa" into characters); `load_tokenizer` reads it as the class it was saved as."""
    tokenizer = build_word_tokenizer(get_task("ioi").vocabulary())
    _tiny(name, len(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    back = load_tokenizer(tmp_path)
    text = "Then, Mary and Lisa went to the store"
    assert back.tokenize(text) == tokenizer.tokenize(text) == ["Then", ",", "Mary", "and", "Lisa", "went", "to",
                                                               "the", "store"]
    assert back(text).input_ids == tokenizer(text).input_ids
    if name == "qwen2":  # what transformers alone gives: the failure this guards against
        assert AutoTokenizer.from_pretrained(tmp_path).tokenize(text) != tokenizer.tokenize(text)


def _jsonl(path, pairs_ok: int, pairs_longer: int):
    rows = [{"clean": "the cat sat on the", "corrupted": "the dog sat on the", "target": "mat",
             "distractor": "rug"}] * pairs_ok
    rows += [{"clean": "the cat sat on the", "corrupted": "the big dog sat on the", "target": "mat",
              "distractor": "rug"}] * pairs_longer
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prune_says_how_many_examples_it_used_and_dropped_and_why(tmp_path, capsys):
    words = ["the", "cat", "dog", "big", "sat", "on", "mat", "rug"]
    model = _gpt2(tmp_path / "m", words)
    data = _jsonl(tmp_path / "pairs.jsonl", 6, 2)
    assert main(["prune", "--model", str(model), "--task", "jsonl", "--data", str(data), "--steps", "2",
                 "--batch-size", "2", "--examples", "8", "--quiet", "--no-draw", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "examples: 6 of 8 used; 2 dropped: 2 because its clean and corrupted prompts tokenize to different" \
           " lengths" in out
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["dropped_by_cause"] == {"length": 2} and metrics["examples"] == 6


def test_prune_stops_below_half_the_examples_unless_told_otherwise(tmp_path, capsys):
    words = ["the", "cat", "dog", "big", "sat", "on", "mat", "rug"]
    model = _gpt2(tmp_path / "m", words)
    data = _jsonl(tmp_path / "pairs.jsonl", 2, 6)
    argv = ["prune", "--model", str(model), "--task", "jsonl", "--data", str(data), "--steps", "2", "--batch-size",
            "2", "--examples", "8", "--quiet", "--no-draw"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "only 2 of 8 used" in err and "tokenize to different lengths" in err and "--min-examples 2" in err
    assert not (tmp_path / "r" / "circuit.json").exists()
    assert main([*argv, "--min-examples", "2", "--out", str(tmp_path / "r")]) == 0


def test_evaluate_says_how_many_examples_it_used(world, capsys):
    assert main(["evaluate", "--model", str(world / "gpt2"), "--task", "ioi", "--examples", "4", "--circuit",
                 str(world / "finished" / "circuit.json")]) == 0
    assert "examples: 4 of 4 used" in capsys.readouterr().out


def test_a_run_far_from_its_target_says_so(world, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="epverify"):
        assert main(["prune", "--model", str(world / "gpt2"), "--task", "ioi", "--steps", "4", "--batch-size", "2",
                     "--examples", "4", "--target-sparsity", "0.8", "--quiet", "--no-draw", "--out",
                     str(tmp_path / "r")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "epverify"]
    assert any("sparsity is" in w and "from the target 0.8" in w for w in warnings), warnings
    assert any("did not converge" in w for w in warnings), warnings
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["converged"] is False


def test_targets_of_one_and_above_get_no_convergence_warning(world, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="epverify"):
        assert main(["prune", "--model", str(world / "gpt2"), "--task", "ioi", "--steps", "4", "--batch-size", "2",
                     "--examples", "4", "--target-sparsity", "1.0", "--quiet", "--no-draw", "--out",
                     str(tmp_path / "r")]) == 0
    assert not [r for r in caplog.records if "converge" in r.getMessage() or "from the target" in r.getMessage()]


# ----- interrupts ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_writes_the_checkpoint_and_prints_the_resume_command(world, tmp_path, sig):
    flags = ["prune", "--model", str(world / "gpt2"), "--task", "ioi", "--steps", "1500", "--batch-size", "2",
             "--examples", "4", "--target-sparsity", "0.6", "--checkpoint-every", "1000", "--no-draw"]
    assert main([*flags, "--quiet", "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "stopped"
    env = {**os.environ, "EPVERIFY_TEST_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "epverify", *flags, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "run.toml").exists():
        time.sleep(0.05)
    time.sleep(1.5)  # some steps in
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    line = [x for x in err.splitlines() if x.startswith("epverify: interrupted")]
    assert line and f"continue with: epverify prune --resume {out}" in line[0], err
    step = checkpoint.load(out / checkpoint.FILENAME)["step"]
    assert 0 < step < 1500 and f"after step {step} of 1500" in line[0]
    assert not (out / "circuit.json").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = subprocess.run([sys.executable, "-m", "epverify", "prune", "--resume", str(out), "--quiet"],
                             cwd=elsewhere, env=env, capture_output=True, text=True)  # run.toml: absolute paths
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "circuit.json").read_text())["edges"] == \
        json.loads((tmp_path / "whole" / "circuit.json").read_text())["edges"]
    assert json.loads((out / "metrics.json").read_text())["history"] == \
        json.loads((tmp_path / "whole" / "metrics.json").read_text())["history"]


def test_run_toml_records_absolute_paths_and_resume_takes_a_new_model_path(world, tmp_path, monkeypatch):
    monkeypatch.chdir(world)
    out = tmp_path / "r"
    assert main(["prune", "--model", "gpt2", "--task", "ioi", *QUICK, "--checkpoint-every", "1", "--out",
                 str(out)]) == 0
    assert f'model = "{world / "gpt2"}"' in (out / "run.toml").read_text()
    moved = tmp_path / "moved_model"
    shutil.copytree(world / "gpt2", moved)
    (out / "circuit.json").unlink()
    monkeypatch.chdir(tmp_path)
    assert main(["prune", "--resume", str(out), "--model", str(moved), "--quiet"]) == 0
    assert f'model = "{moved}"' in (out / "run.toml").read_text()
