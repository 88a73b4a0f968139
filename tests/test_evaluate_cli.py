"""`epverify evaluate`: task metrics of any circuit file (epverify's JSON or EAP-IG's) on tiny random checkpoints
saved by the test, and a one-line refusal of a circuit made for another model."""

import json
import random

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from epverify.adapters import wrap_pretrained
from epverify.cli import main
from epverify.core.graph import ComponentGraph
from epverify.io import export
from epverify.io.circuit import Circuit
from epverify.tasks import get_task
from epverify.tasks.tokenizer import build_word_tokenizer


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tokenizer = build_word_tokenizer(get_task("ioi").vocabulary())
    torch.manual_seed(0)
    models = {
        "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2,
                                           n_head=2)),
        "llama": LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                              max_position_embeddings=128)),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return paths


def _evaluate(model, circuit, tmp_path, *extra):
    report = tmp_path / f"report_{len(list(tmp_path.glob('report_*')))}.json"
    code = main(["evaluate", "--model", str(model), "--task", "ioi", "--circuit", str(circuit), "--examples", "8",
                 "--batch-size", "4", "--json", str(report), *extra])
    assert code == 0
    return json.loads(report.read_text())


def _circuit_for(path, fraction, seed=0):
    masked = wrap_pretrained(path)
    rng = random.Random(seed)
    edges = [e for e in masked.graph.edges if rng.random() < fraction]
    return Circuit(edges, masked.graph.num_edges, model={**masked.adapter.summary(), "path": str(path)})


def test_the_whole_graph_as_a_circuit_is_the_full_model(checkpoints, tmp_path, capsys):
    circuit = _circuit_for(checkpoints["gpt2"], 1.0)
    report = _evaluate(checkpoints["gpt2"], circuit.to_json(tmp_path / "all.json"), tmp_path)
    assert report["kl"] < 1e-6 and report["exact_match"] == 1.0
    assert report["accuracy"] == report["full_model_accuracy"]
    assert report["edges"] == report["total_edges"] and report["circuit_format"] == "epverify"
    assert "kl" in capsys.readouterr().out


def test_an_eap_ig_file_gives_the_metrics_of_the_same_circuit(checkpoints, tmp_path):
    """Llama (one embedding, grouped-query attention): EAP-IG's own fields name the circuit exactly."""
    circuit = _circuit_for(checkpoints["llama"], 0.5)
    ours = _evaluate(checkpoints["llama"], circuit.to_json(tmp_path / "c.json"), tmp_path, "--ablation", "zero")
    eap = tmp_path / "c.eap.json"
    eap.write_text(json.dumps(export.to_eap_ig(circuit, extension=False)))  # as EAP-IG itself would write it
    theirs = _evaluate(checkpoints["llama"], eap, tmp_path, "--ablation", "zero")
    assert theirs["circuit_format"] == "eap-ig" and ours["circuit_format"] == "epverify"
    for key in ("edges", "kl", "logit_diff", "accuracy", "exact_match"):
        assert theirs[key] == ours[key], key


def _errors(capsys):
    """epverify's own lines on stderr (transformers may draw a weight-loading bar there too)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("epverify:")]


def test_a_circuit_for_another_model_is_refused_in_one_line(checkpoints, tmp_path, capsys):
    other = ComponentGraph(3, 2, 2, ("tok_embeds", "pos_embeds"))
    path = Circuit(list(other.edges[:5]), other.num_edges, model=other.summary()).to_json(tmp_path / "o.json")
    assert main(["evaluate", "--model", str(checkpoints["gpt2"]), "--task", "ioi", "--circuit", str(path)]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and "3 layers (this model: 2)" in err[0]

    eap = tmp_path / "o.eap.json"
    eap.write_text(json.dumps(export.to_eap_ig(_circuit_for(checkpoints["gpt2"], 0.3), extension=False)))
    assert main(["evaluate", "--model", str(checkpoints["llama"]), "--task", "ioi", "--circuit", str(eap)]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and "2 heads (this model: 4)" in err[0]

    assert main(["evaluate", "--model", str(checkpoints["gpt2"]), "--task", "ioi"]) == 2
    assert "--circuit" in capsys.readouterr().err
