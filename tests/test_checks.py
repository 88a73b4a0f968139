"""Empty circuits are reported: `epverify prune` with a target sparsity that empties the circuit flags it in
metrics.json and the circuit file, and warns in one line."""

from __future__ import annotations

import json
import logging

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from epverify.cli import main
from epverify.core.graph import ComponentGraph
from epverify.eval import checks
from epverify.io.circuit import Circuit
from epverify.tasks import get_task
from epverify.tasks.tokenizer import build_word_tokenizer


def _checkpoint(tmp_path):
    tokenizer = build_word_tokenizer(get_task("ioi").vocabulary())
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=16, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    return tmp_path / "gpt2"


def test_prune_flags_and_warns_about_an_empty_circuit(tmp_path, caplog, capsys):
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="epverify"):
        code = main(["prune", "--model", str(_checkpoint(tmp_path)), "--task", "ioi", "--target-sparsity",
                     "1.5", "--steps", "40", "--warmup-steps", "1", "--lr", "1.0", "--lambda-lr", "1.0",
                     "--batch-size", "4", "--examples", "8", "--out", str(out)])
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "epverify"]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ioi on ")
    assert "the circuit is empty" in warnings[0]
    assert "target sparsity 1.5" in warnings[0]
    assert json.loads((out / "metrics.json").read_text())["empty"] is True
    circuit = Circuit.from_json(out / "circuit.json")
    assert circuit.edges == [] and circuit.metrics["empty"] is True
    assert "circuit: 0 of" in capsys.readouterr().out


def test_a_circuit_with_edges_is_not_flagged(caplog):
    graph = ComponentGraph(1, 1, 1, ("tok_embeds",))
    circuit = Circuit.from_masks(graph, torch.ones(graph.num_edges))
    with caplog.at_level(logging.WARNING, logger="epverify"):
        assert checks.flag_empty(circuit) is False
    assert circuit.metrics["empty"] is False and not caplog.records


def test_the_message_says_when_every_passing_edge_dangled():
    graph = ComponentGraph(1, 1, 1, ("tok_embeds",))
    log_alpha = -torch.ones(graph.num_edges)
    log_alpha[graph.edge_index[("tok_embeds", "m0")]] = 1.0  # m0 feeds nothing: the edge dangles
    circuit = Circuit.from_masks(graph, log_alpha)
    message = checks.empty_circuit_message(circuit)
    assert circuit.edges == [] and "the one edge with log-alpha > 0 dangles" in message
