"""`epverify prune` end to end on tiny random checkpoints saved locally, for every task; nothing is downloaded."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from epverify.adapters.registry import families
from epverify.cli import main
from epverify.io.circuit import Circuit
from epverify.tasks import TASKS, get_task
from epverify.tasks.tokenizer import build_word_tokenizer


def _checkpoint(tmp_path, family, words):
    tokenizer = build_word_tokenizer(words)
    torch.manual_seed(0)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2,
                                           n_head=2))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=128))
    path = tmp_path / family
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _jsonl(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"clean": "the cat sat on the", "corrupted": "the dog sat on the", "target": "mat",
             "distractor": "rug"}] * 6
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("task", sorted(TASKS))
def test_prune_writes_a_circuit_for_every_task(tmp_path, task, capsys):
    extra = []
    words = get_task(task, path=_jsonl(tmp_path)).vocabulary() if task == "jsonl" else get_task(task).vocabulary()
    if task == "jsonl":
        extra = ["--data", str(_jsonl(tmp_path))]
    family = "llama" if task in ("boolean-expressions", "ioi") else "gpt2"
    model = _checkpoint(tmp_path, family, words)
    out = tmp_path / "run"
    code = main(["prune", "--model", str(model), "--task", task, *extra, "--steps", "6", "--batch-size", "4",
                 "--examples", "8", "--target-sparsity", "0.5", "--out", str(out)])
    assert code == 0
    circuit = Circuit.from_json(out / "circuit.json")
    metrics = json.loads((out / "metrics.json").read_text())
    assert circuit.total_edges > 0 and "kl" in metrics and len(metrics["history"]) == 6
    for name in ("circuit.png", "circuit.svg", "training.png", "run.toml"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "circuit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (out / "circuit.svg").read_text()
    assert "wrote" in capsys.readouterr().out


def test_config_file_supplies_flags_and_the_command_line_wins(tmp_path, capsys):
    model = _checkpoint(tmp_path, "gpt2", get_task("ioi").vocabulary())
    config = tmp_path / "run.toml"
    config.write_text(f'model = "{model}"\ntask = "ioi"\nsteps = 5\nbatch-size = 2\nexamples = 4\n'
                      'target_sparsity = 0.3\nno_draw = true\nquiet = true\n')
    out = tmp_path / "run"
    assert main(["prune", "--config", str(config), "--steps", "3", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 3 and metrics["config"]["target_sparsity"] == 0.3
    assert metrics["config"]["batch_size"] == 2 and not (out / "circuit.png").exists()
    saved = (out / "run.toml").read_text()  # the resolved config, reusable as --config
    assert "steps = 3\n" in saved and "target_sparsity = 0.3\n" in saved
    printed = capsys.readouterr().out
    assert "steps = 3" in printed and "batch_size = 2" in printed
    assert main(["prune", "--config", str(out / "run.toml"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["history"] == metrics["history"]


def test_prune_reports_a_missing_model_in_one_line(tmp_path, capsys):
    code = main(["prune", "--model", str(tmp_path / "nope"), "--task", "ioi", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_prune_rejects_out_of_range_sparsity(tmp_path, capsys):
    model = _checkpoint(tmp_path, "gpt2", get_task("ioi").vocabulary())
    code = main(["prune", "--model", str(model), "--task", "ioi", "--target-sparsity", "2", "--out",
                 str(tmp_path / "o")])
    assert code == 2 and "[0, 1.5]" in capsys.readouterr().err


STYLE = {"gemma": "gemma", "gemma2": "gemma", "gemma3_text": "gemma", "llama": "llama3"}


@pytest.mark.parametrize("name", sorted(families()))
def test_prune_runs_on_a_saved_tiny_checkpoint_of_every_registered_family(tmp_path, name):
    """`epverify prune` on every family in the registry, from a directory written by save_pretrained; Gemma's
    and Llama 3's tokenizers (BOS prepended, Llama 3's without a pad token) keep their BOS first in every row."""
    from epverify.adapters.registry import Sizes, family

    style = STYLE.get(name, "plain")
    tokenizer = build_word_tokenizer(get_task("ioi").vocabulary(), style=style)
    path = tmp_path / name
    family(name).tiny_model(Sizes(vocab=len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    out = tmp_path / "run"
    assert main(["prune", "--model", str(path), "--task", "ioi", "--steps", "3", "--batch-size", "4",
                 "--examples", "8", "--target-sparsity", "0.5", "--device", "cpu", "--no-draw", "--out", str(out)]) == 0
    circuit = Circuit.from_json(out / "circuit.json")
    assert circuit.model["family"] == name
    if style != "plain":
        task = get_task("ioi")
        data = task.encode(tokenizer, task.examples(8, seed=0)).data
        assert (data.input_ids[:, 0] == tokenizer.bos_token_id).all()
        assert (data.corrupted_ids[:, 0] == tokenizer.bos_token_id).all()
        assert tokenizer.pad_token_id is None or style == "gemma"
