"""Checkpoint and resume: a run that is stopped (an exception, or SIGKILL from outside) and resumed ends exactly
where the uninterrupted run with the same seed ends: same masks, same loss history, same circuit."""

import json
from dataclasses import replace

import pytest
import torch
from sigkill import run_killed
from transformers import GPT2Config, GPT2LMHeadModel

from epverify import PruneConfig, prune
from epverify.adapters import wrap
from epverify.cli import main
from epverify.errors import EpverifyError
from epverify.io import checkpoint
from epverify.tasks import get_task
from epverify.tasks.tokenizer import build_word_tokenizer
from epverify.tracr import zoo
from epverify.tracr.model import CompiledModel
from epverify.tracr.policy import TRACR_CONFIG, tracr_data


class _Stop(Exception):
    pass


def _stop_at(step):
    def progress(record):
        if record["step"] == step:
            raise _Stop

    return progress


def _interrupted_then_resumed(adapter, data, config, path, stop_at, every):
    with pytest.raises(_Stop):
        prune(adapter, data, config, progress=_stop_at(stop_at), checkpoint_path=path, checkpoint_every=every)
    assert checkpoint.load(path)["step"] == stop_at - stop_at % every
    return prune(adapter, data, config, checkpoint_path=path, checkpoint_every=every, resume=True)


@pytest.mark.parametrize("estimator", ["score", "pathwise"])
def test_resumed_training_equals_uninterrupted(tmp_path, estimator):
    model = CompiledModel.load(zoo.ROOT / "hist")
    adapter, data = wrap(model).adapter, tracr_data(model)
    config = PruneConfig(**{**TRACR_CONFIG.__dict__, "steps": 30, "warmup_steps": 20, "estimator": estimator,
                            "per_example_masks": True})
    full = prune(adapter, data, config)
    resumed = _interrupted_then_resumed(adapter, data, config, tmp_path / "ck.pt", stop_at=17, every=5)
    assert torch.equal(full.edge_log_alpha, resumed.edge_log_alpha)
    assert torch.equal(full.lambdas, resumed.lambdas)
    assert full.history == resumed.history


def test_a_run_resumes_with_other_micro_batches_and_layer_checkpointing(tmp_path):
    """Settings that change only a step's memory may change on resume (after running out of memory, say); the run
    ends where an uninterrupted one does."""
    model = CompiledModel.load(zoo.ROOT / "hist")
    adapter, data = wrap(model).adapter, tracr_data(model)
    config = PruneConfig(steps=12, warmup_steps=8, batch_size=16, lr=0.1, lambda_lr=0.1, per_example_masks=True)
    full = prune(adapter, data, config)
    path = tmp_path / "ck.pt"
    with pytest.raises(_Stop):
        prune(adapter, data, config, progress=_stop_at(7), checkpoint_path=path, checkpoint_every=5)
    smaller = replace(config, micro_batch_size=5, checkpoint_layers=True)
    resumed = prune(adapter, data, smaller, checkpoint_path=path, resume=True)
    assert torch.allclose(full.edge_log_alpha, resumed.edge_log_alpha, rtol=0, atol=1e-4)
    assert len(resumed.history) == len(full.history)


def test_a_checkpoint_from_before_the_nested_config_resumes(tmp_path):
    """Checkpoints written before the score estimator's settings were nested (flat `score_gate`, ...) and before
    later settings existed resume: a missing field counts as what runs did before it existed, and the run ends
    where an uninterrupted one does."""
    model = CompiledModel.load(zoo.ROOT / "hist")
    adapter, data = wrap(model).adapter, tracr_data(model)
    config = PruneConfig(**{**TRACR_CONFIG.__dict__, "steps": 20, "warmup_steps": 10})
    full = prune(adapter, data, config)
    path = tmp_path / "ck.pt"
    with pytest.raises(_Stop):
        prune(adapter, data, config, progress=_stop_at(12), checkpoint_path=path, checkpoint_every=5)
    state = checkpoint.load(path)
    old = {k: v for k, v in state["config"].items() if k not in ("score", "max_edge_price", "gate_temperature")}
    old.update({f"score_{k}": v for k, v in state["config"]["score"].items()})  # the flat form of 2026-11
    state["config"] = old
    checkpoint.save(path, {k: v for k, v in state.items() if k != "format"})
    resumed = prune(adapter, data, config, checkpoint_path=path, checkpoint_every=5, resume=True)
    assert torch.equal(full.edge_log_alpha, resumed.edge_log_alpha) and full.history == resumed.history


def test_resume_refuses_a_different_config_or_dataset(tmp_path):
    model = CompiledModel.load(zoo.ROOT / "hist")
    adapter, data = wrap(model).adapter, tracr_data(model)
    config = PruneConfig(steps=6, warmup_steps=3, batch_size=8)
    prune(adapter, data, config, checkpoint_path=tmp_path / "ck.pt", checkpoint_every=2)
    other = PruneConfig(steps=6, warmup_steps=3, batch_size=8, lr=0.5)
    with pytest.raises(EpverifyError, match="different configuration.*lr"):
        prune(adapter, data, other, checkpoint_path=tmp_path / "ck.pt", resume=True)
    fewer = type(data)(data.input_ids[:-1], data.attention_mask[:-1], data.loss_mask[:-1],
                       None if data.corrupted_ids is None else data.corrupted_ids[:-1])
    with pytest.raises(EpverifyError, match="different training examples"):
        prune(adapter, fewer, config, checkpoint_path=tmp_path / "ck.pt", resume=True)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ck.pt"
    checkpoint.save(path, {"step": 1})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(EpverifyError, match="unreadable.*truncated"):
        checkpoint.load(path)


# ----- SIGKILL through the command line ---------------------------------------------------------------------------
def _tiny_checkpoint(path):
    tokenizer = build_word_tokenizer(get_task("ioi").vocabulary())
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _finished(out):
    circuit = json.loads((out / "circuit.json").read_text())
    history = json.loads((out / "metrics.json").read_text())["history"]
    return sorted(map(tuple, circuit["edges"])), history


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_circuit(tmp_path):
    model = _tiny_checkpoint(tmp_path / "model")
    flags = ["prune", "--model", str(model), "--task", "ioi", "--steps", "150", "--batch-size", "4",
             "--examples", "8", "--target-sparsity", "0.6", "--checkpoint-every", "5", "--no-draw", "--quiet"]
    assert main([*flags, "--out", str(tmp_path / "whole")]) == 0

    out = tmp_path / "killed"
    assert run_killed([*flags, "--out", str(out)], out / checkpoint.FILENAME) < 150
    assert not (out / "circuit.json").exists()  # nothing that looks like a finished run

    assert main(["prune", "--resume", str(out), "--quiet"]) == 0
    edges, history = _finished(out)
    whole_edges, whole_history = _finished(tmp_path / "whole")
    assert edges == whole_edges
    assert history == whole_history
    final = checkpoint.load(out / checkpoint.FILENAME)  # written at step 150 by both runs
    whole = checkpoint.load(tmp_path / "whole" / checkpoint.FILENAME)
    assert final["step"] == whole["step"] == 150
    assert all(torch.equal(a, b) for a, b in zip(final["params"], whole["params"], strict=True))
