"""The bad-input catalogue: every kind of mistake a user makes at the command line gets one line on stderr,
`epverify: error: ...`, naming what was expected, exit status 2, no traceback, and no output that looks like a
finished run (no circuit.json). One row per kind; the test ids name them."""

import json
import os
import shutil

import pytest
import torch
from transformers import BertConfig, GPT2Config, GPT2LMHeadModel

from epverify.cli import main
from epverify.tasks import get_task
from epverify.tasks.tokenizer import build_word_tokenizer

PRUNE = ["--steps", "2", "--batch-size", "2", "--examples", "4", "--quiet", "--no-draw"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny GPT-2 with its tokenizer, and broken variants of it."""
    root = tmp_path_factory.mktemp("bad_input")
    tokenizer = build_word_tokenizer(get_task("ioi").vocabulary())
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2))
    good = root / "gpt2"
    model.save_pretrained(good)
    tokenizer.save_pretrained(good)

    no_tokenizer = root / "no_tokenizer"
    model.save_pretrained(no_tokenizer)
    (root / "empty").mkdir()
    bert = root / "bert"
    BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(bert)
    small_vocab = root / "small_vocab"  # a model whose embedding table is smaller than its tokenizer
    GPT2LMHeadModel(GPT2Config(vocab_size=10, n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(
        small_vocab)
    tokenizer.save_pretrained(small_vocab)
    short = root / "short_context"  # 4 positions: the IOI prompts are longer
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=4, n_embd=16, n_layer=1,
                               n_head=2)).save_pretrained(short)
    tokenizer.save_pretrained(short)

    finished = root / "finished"
    assert main(["prune", "--model", str(good), "--task", "ioi", *PRUNE, "--checkpoint-every", "1",
                 "--out", str(finished)]) == 0
    corrupt = root / "corrupt_ckpt"
    shutil.copytree(finished, corrupt)
    (corrupt / "circuit.json").unlink()
    data = (corrupt / "checkpoint.pt").read_bytes()
    (corrupt / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    no_ckpt = root / "no_ckpt"  # killed before its first checkpoint
    no_ckpt.mkdir()
    shutil.copy(finished / "run.toml", no_ckpt / "run.toml")
    unfinished = root / "unfinished"
    shutil.copytree(corrupt, unfinished)

    truncated = root / "truncated.json"  # an interrupted write by another tool
    text = (finished / "circuit.json").read_text()
    truncated.write_text(text[: len(text) // 2])
    foreign = root / "foreign.json"
    foreign.write_text(json.dumps({"nodes": [1, 2], "edges": "abc"}))
    other_model = root / "other_model.json"  # a circuit from a model with another shape
    circuit = json.loads(text)
    circuit["total_edges"] += 7
    circuit["model"] = {**circuit.get("model", {}), "n_layers": 5}
    other_model.write_text(json.dumps(circuit))

    (root / "bad.toml").write_text("steps = [oops\n")
    (root / "unknown_key.toml").write_text("stepz = 3\n")
    (root / "wrong_type.toml").write_text('lr = "fast"\n')
    (root / "pairs_empty.jsonl").write_text("")
    (root / "pairs_broken.jsonl").write_text('{"clean": "the cat"\n')
    (root / "pairs_missing.jsonl").write_text(json.dumps({"clean": "a b", "corrupted": "a c"}) + "\n")
    (root / "not_a_dir").write_text("x")
    (root / "broken_program.py").write_text("import nonexistent_module_xyz\n")
    (root / "program.py").write_text("def make():\n    return None\n")

    no_weights = root / "no_weights"  # config and tokenizer, no weights
    GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2).save_pretrained(no_weights)
    tokenizer.save_pretrained(no_weights)
    half = root / "half_weights"  # model.safetensors cut in half
    shutil.copytree(good, half)
    weights = (half / "model.safetensors").read_bytes()
    (half / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (root / "config_dir.toml").mkdir()
    (root / "switch_not_bool.toml").write_text("quiet = 3\n")
    (root / "bad_choice.toml").write_text('ablation = "half"\n')
    (root / "nested.toml").write_text("[steps]\nvalue = 3\n")
    (root / "pairs_list.jsonl").write_text("[1, 2]\n")
    (root / "pairs_number.jsonl").write_text(json.dumps({"clean": "a", "corrupted": "b", "target": 1,
                                                          "distractor": "c"}) + "\n")
    (root / "pairs_latin1.jsonl").write_bytes('{"clean": "caf\xe9"}\n'.encode("latin-1"))
    unknown = {"clean": "Then , Mary and John", "corrupted": "Then , Lisa and Tom", "target": "zebra",
               "distractor": "quokka"}
    (root / "pairs_unknown.jsonl").write_text(json.dumps(unknown) + "\n")
    good_pair = {"clean": "Then , Mary and John went to the", "corrupted": "Then , Lisa and Tom went to the",
                 "target": "store", "distractor": "park"}
    longer = {**good_pair, "corrupted": "Then , Lisa and Tom went to the big"}
    (root / "pairs_mostly_dropped.jsonl").write_text(json.dumps(good_pair) + "\n" + (json.dumps(longer) + "\n") * 3)
    busy = root / "busy"
    busy.mkdir()
    (busy / ".lock").write_text(f"pid {os.getpid()} on {os.uname().nodename}\n")  # this process: alive
    return root


def p(world, *args, model="gpt2", out="out", task="ioi"):
    argv = ["prune", "--model", str(world / model), "--task", task, *PRUNE, "--out", str(world / out)]
    return argv + [str(a).format(root=world) for a in args]


CASES = {
    # model and tokenizer
    "model directory missing": (lambda w: p(w, model="nope"), "no model directory"),
    "model directory without a config": (lambda w: p(w, model="empty"), "cannot read a model config"),
    "unsupported architecture": (lambda w: p(w, model="bert"), "supported"),
    "no tokenizer beside the model": (lambda w: p(w, model="no_tokenizer"), "no tokenizer files"),
    "tokenizer of another model": (lambda w: p(w, model="small_vocab"), "does not belong to this model"),
    "prompt longer than the model's context": (lambda w: p(w, model="short_context"),
                                               "longer than the 4 positions the model takes"),
    # device and dtype (this test runs where torch sees no GPU; see tests/test_device.py for the rest)
    "a GPU asked for where there is none": (lambda w: p(w, "--device", "cuda"), "torch sees no GPU here"),
    "a device that is not one": (lambda w: p(w, "--device", "gpu0"), "not a device"),
    "a device epverify does not run on": (lambda w: p(w, "--device", "mps"), "the CPU or a CUDA GPU"),
    "an unknown dtype": (lambda w: p(w, "--dtype", "float8"), "invalid choice"),
    "evaluate on a GPU that is not there": (lambda w: ["evaluate", "--model", str(w / "gpt2"), "--task", "ioi",
                                                       "--circuit", str(w / "finished" / "circuit.json"),
                                                       "--device", "cuda:1"], "torch sees no GPU here"),
    # task and data
    "unknown task": (lambda w: p(w, task="ioj"), "unknown task 'ioj'"),
    "jsonl task without --data": (lambda w: p(w, task="jsonl"), "--data FILE.jsonl"),
    "data file missing": (lambda w: p(w, "--data", "{root}/nope.jsonl", task="jsonl"), "nope.jsonl"),
    "empty data file": (lambda w: p(w, "--data", "{root}/pairs_empty.jsonl", task="jsonl"), "pairs_empty"),
    "data file not JSON lines": (lambda w: p(w, "--data", "{root}/pairs_broken.jsonl", task="jsonl"),
                                 "jsonl:1: not valid JSON"),
    "data line missing a field": (lambda w: p(w, "--data", "{root}/pairs_missing.jsonl", task="jsonl"),
                                  "target"),
    # training settings
    "target sparsity out of range": (lambda w: p(w, "--target-sparsity", "1.7"), "[0, 1.5]"),
    "no training steps": (lambda w: p(w, "--steps", "0"), "at least 1"),
    "warm-up longer than training": (lambda w: p(w, "--warmup-steps", "9"), "warm-up"),
    "negative checkpoint interval": (lambda w: p(w, "--checkpoint-every", "-3"), "--checkpoint-every"),
    "unknown flag": (lambda w: p(w, "--target-sparsty", "0.5"), "unrecognized arguments"),
    "number flag given a word": (lambda w: p(w, "--lr", "fast"), "invalid float value"),
    # config files
    "config file missing": (lambda w: p(w, "--config", "{root}/nope.toml"), "does not exist"),
    "config file not TOML": (lambda w: p(w, "--config", "{root}/bad.toml"), "not valid TOML"),
    "config file with an unknown setting": (lambda w: p(w, "--config", "{root}/unknown_key.toml"), "'stepz'"),
    "config value of the wrong type": (lambda w: p(w, "--config", "{root}/wrong_type.toml"), "lr must be a number"),
    # output directory, checkpoints, resume
    "out is a file": (lambda w: p(w, out="not_a_dir"), "is a file"),
    "out holds a finished run": (lambda w: p(w, out="finished"), "finished run"),
    "out holds an unfinished run": (lambda w: p(w, out="unfinished"), "--resume"),
    "resume a directory that is no run": (lambda w: ["prune", "--resume", str(w / "empty")], "run.toml"),
    "resume a run killed before its first checkpoint": (lambda w: ["prune", "--resume", str(w / "no_ckpt")],
                                                         "no checkpoint"),
    "resume a corrupted checkpoint": (lambda w: ["prune", "--resume", str(w / "corrupt_ckpt")], "unreadable"),
    "resume a finished run without --overwrite": (lambda w: ["prune", "--resume", str(w / "finished")],
                                                  "finished run"),
    "resume into another --out": (lambda w: ["prune", "--resume", str(w / "unfinished"), "--out", str(w / "x")],
                                  "differs from --resume"),
    "required flags missing": (lambda w: ["prune", "--task", "ioi"], "missing --model"),
    "out lies under a file": (lambda w: p(w, out="not_a_dir/run"), "lies under a file"),
    "out under /proc": (lambda w: p(w)[:-1] + ["/proc/epverify-run"], "cannot create the directory"),
    "out is the model's own directory": (lambda w: p(w, out="gpt2"), "would overwrite the input"),
    "out written by another command now": (lambda w: p(w, out="busy"), "being written by another"),
    # more model checkpoints
    "checkpoint with config and tokenizer but no weights": (lambda w: p(w, model="no_weights"), "no weights"),
    "weights file cut in half": (lambda w: p(w, model="half_weights"), "cannot read the weights"),
    "model path is a file": (lambda w: p(w, model="not_a_dir"), "no model directory"),
    # more task and data
    "--data for a task that makes its own examples": (lambda w: p(w, "--data", "{root}/pairs_missing.jsonl"),
                                                      "--data is for the jsonl task"),
    "no examples asked for": (lambda w: p(w, "--examples", "0"), "at least 1 example"),
    "unknown prompt style": (lambda w: p(w, "--prompt", "fancy", task="boolean"), "invalid choice"),
    "data file is a directory": (lambda w: p(w, "--data", "{root}/empty", task="jsonl"), "empty"),
    "data line not an object": (lambda w: p(w, "--data", "{root}/pairs_list.jsonl", task="jsonl"),
                                "expected a JSON object"),
    "data field not a string": (lambda w: p(w, "--data", "{root}/pairs_number.jsonl", task="jsonl"),
                                "must be strings"),
    "data file not UTF-8": (lambda w: p(w, "--data", "{root}/pairs_latin1.jsonl", task="jsonl"), "not UTF-8"),
    "every answer unknown to the tokenizer": (lambda w: p(w, "--data", "{root}/pairs_unknown.jsonl", task="jsonl"),
                                              "no token of the tokenizer"),
    "most pairs dropped": (lambda w: p(w, "--data", "{root}/pairs_mostly_dropped.jsonl", task="jsonl"),
                           "only 1 of 4 used"),
    # more training settings
    "negative learning rate": (lambda w: p(w, "--lr", "-1"), "lr (-1.0) must be a number >= 0"),
    "negative lambda learning rate": (lambda w: p(w, "--lambda-lr", "-0.5"), "lambda_lr (-0.5)"),
    "batch larger than the examples": (lambda w: p(w, "--batch-size", "64", "--examples", "8"),
                                       "larger than the 8 examples"),
    "target sparsity not a number": (lambda w: p(w, "--target-sparsity", "nan"), "out of range"),
    "negative warm-up": (lambda w: p(w, "--warmup-steps", "-1"), "warm-up"),
    "minimum examples below one": (lambda w: p(w, "--min-examples", "0"), "--min-examples"),
    "unknown ablation": (lambda w: p(w, "--ablation", "half"), "invalid choice"),
    # more config files
    "config file is a directory": (lambda w: p(w, "--config", "{root}/config_dir.toml"), "is a directory"),
    "config switch not true or false": (lambda w: p(w, "--config", "{root}/switch_not_bool.toml"),
                                        "must be true or false"),
    "config value not among the choices": (lambda w: p(w, "--config", "{root}/bad_choice.toml"), "is not one of"),
    "config with a table": (lambda w: p(w, "--config", "{root}/nested.toml"), "unknown setting 'steps'"),
    # circuit files
    "circuit file truncated by an interrupted write": (lambda w: ["draw", str(w / "truncated.json")],
                                                       "truncated.json"),
    "circuit file of another format": (lambda w: ["draw", str(w / "foreign.json")], "foreign.json"),
    "circuit made for a different model": (
        lambda w: ["evaluate", "--model", str(w / "gpt2"), "--task", "ioi", "--examples", "4", "--circuit",
                   str(w / "other_model.json")], "other_model.json"),
    "circuit given as a directory": (
        lambda w: ["evaluate", "--model", str(w / "gpt2"), "--task", "ioi", "--circuit", str(w / "finished")],
        "is a directory"),
    "evaluate without a circuit": (lambda w: ["evaluate", "--model", str(w / "gpt2"), "--task", "ioi"],
                                   "missing --circuit"),
    "evaluate writing over its circuit": (
        lambda w: ["evaluate", "--model", str(w / "gpt2"), "--task", "ioi", "--circuit",
                   str(w / "finished" / "circuit.json"), "--json", str(w / "finished" / "circuit.json")],
        "would overwrite the input"),
    "export without a format": (lambda w: ["export", str(w / "finished" / "circuit.json")], "missing --to"),
    "export to MIB without a task": (lambda w: ["export", str(w / "finished" / "circuit.json"), "--to", "mib",
                                                "--out", str(w / "mib")], "--to mib needs --task"),
    "export writing over its input": (lambda w: ["export", str(w / "finished" / "circuit.json"), "--to", "graphml",
                                                 "--out", str(w / "finished" / "circuit.json")],
                                      "would overwrite the input"),
    "draw with no format": (lambda w: ["draw", str(w / "finished" / "circuit.json"), "--format", ","],
                            "--format is empty"),
    "draw to an unknown format": (lambda w: ["draw", str(w / "finished" / "circuit.json"), "--format", "gif",
                                             "--out", str(w / "pic")], "cannot draw to format gif"),
    # Tracr programs
    "program vocabulary empty": (lambda w: ["recover", f"{w}/program.py:make", "--vocab", ",", "--max-seq-len",
                                            "3"], "--vocab is empty"),
    "program function missing": (lambda w: ["recover", f"{w}/program.py:nope", "--vocab", "a", "--max-seq-len",
                                            "3"], "has no function 'nope'"),
    "recover writing over its program": (lambda w: ["recover", f"{w}/program.py:make", "--vocab", "a",
                                                    "--max-seq-len", "3", "--json", str(w / "program.py")],
                                         "would overwrite the input"),
    "recover under an unknown ablation": (lambda w: ["recover", "count", "--ablation", "resample"],
                                          "invalid choice"),
    "unknown program": (lambda w: ["recover", "revers"], "unknown program 'revers'"),
    "program file without a function name": (lambda w: ["recover", str(w / "program.py")], "FILE.py:FUNCTION"),
    "program file missing": (lambda w: ["recover", f"{w}/nope.py:make", "--vocab", "a", "--max-seq-len", "3"],
                             "does not exist"),
    "program file that fails to import": (lambda w: ["recover", f"{w}/broken_program.py:make", "--vocab", "a",
                                                     "--max-seq-len", "3"], "failed to import"),
    "program settings missing": (lambda w: ["recover", f"{w}/program.py:make"], "--vocab"),
}


def test_the_catalogue_has_at_least_sixty_kinds():
    assert len(CASES) >= 60


@pytest.mark.parametrize("kind", list(CASES))
def test_bad_input_gets_one_line_and_status_2(world, kind, capsys):
    make_argv, expected = CASES[kind]
    argv = make_argv(world)
    before = {p: p.stat().st_mtime_ns for p in world.rglob("circuit.json")}
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("epverify")]
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("epverify: error: "), captured.err
    assert "Traceback" not in captured.err
    assert expected in lines[0], lines[0]
    after = {p: p.stat().st_mtime_ns for p in world.rglob("circuit.json")}
    assert after == before  # no circuit written or overwritten
