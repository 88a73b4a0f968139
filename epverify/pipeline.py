"""Edge Pruning of a Hugging Face model on a task: task -> adapter -> engine -> trainer -> circuit -> metrics."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from . import checkpoint, engine
from .adapters import wrap_pretrained
from .checks import flag_empty
from .circuit import Circuit
from .errors import EpverifyError
from .tasks import get_task
from .trainer import PruneConfig, PruneData, prune


def load_tokenizer(path: str | Path):
    """The tokenizer saved beside a local checkpoint."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise EpverifyError(
            f"no tokenizer could be loaded from {path} ({str(err).splitlines()[0]}): save the tokenizer beside the"
            " model with tokenizer.save_pretrained(path)"
        ) from None


@torch.no_grad()
def _logits_in_batches(masked, batch, edge_mask, ablation, mean, batch_size: int):
    """Circuit and full-model logits at each example's target position: (N, V) each."""
    circuit_rows, full_rows = [], []
    n = batch.clean_ids.shape[0]
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        ids, mask = batch.clean_ids[sl], batch.attention_mask[sl]
        rows = torch.arange(ids.shape[0])
        pos = batch.target_positions[sl]
        full = engine.forward(masked.adapter, ids, mask)
        circuit = masked.run(ids, mask, corrupted_ids=batch.corrupted_ids[sl], ablation=ablation,
                             edge_mask=edge_mask, mean=mean)
        full_rows.append(full[rows, pos].float())
        circuit_rows.append(circuit[rows, pos].float())
    return torch.cat(circuit_rows), torch.cat(full_rows)


OUTPUTS = ("circuit.json", "metrics.json", "circuit.png", "circuit.svg", "training.png")  # circuit.json last


def prepare_out_dir(out_dir: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Check that `out_dir` may receive this run: a finished run (circuit.json) or an unfinished one (a checkpoint)
    is never overwritten silently; with `overwrite` their files are removed first."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EpverifyError(f"--out {out} is a file: give a directory for the run's outputs")
    finished = (out / "circuit.json").exists()
    unfinished = (out / checkpoint.FILENAME).exists()
    if resume:
        if finished and not overwrite:
            raise EpverifyError(f"{out} holds a finished run (circuit.json): nothing to resume; pass --overwrite to"
                                " recompute its outputs from the last checkpoint")
    elif finished or unfinished:
        if not overwrite:
            what = "a finished run (circuit.json)" if finished else "an unfinished run (checkpoint.pt)"
            hint = "" if finished else f", --resume {out} to continue it,"
            raise EpverifyError(f"{out} already holds {what}: choose another --out{hint} or pass --overwrite")
        for name in (*OUTPUTS, checkpoint.FILENAME):
            (out / name).unlink(missing_ok=True)
    if resume:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def prune_on_task(model_path: str | Path, task_name: str, config: PruneConfig, out_dir: str | Path,
                  n_examples: int = 256, task_options: dict | None = None, progress=None,
                  checkpoint_every: int = 0, resume: bool = False, draw: bool = True) -> Circuit:
    """Prune a local checkpoint on a task and write the run's outputs into out_dir: metrics.json, the drawings
    (circuit.png, circuit.svg, training.png) and, last, circuit.json, so a directory with circuit.json holds a
    finished run. Training state goes to out_dir/checkpoint.pt every `checkpoint_every` steps; `resume`
    continues from it. Returns the circuit (metrics filled in). An empty circuit is flagged (`metrics["empty"]`)
    and warned about."""
    config.validate()
    out = Path(out_dir)
    if resume and not (out / checkpoint.FILENAME).is_file():
        raise EpverifyError(f"no checkpoint in {out}: --resume needs a directory in which a run wrote"
                            f" {checkpoint.FILENAME} (runs checkpoint every --checkpoint-every steps)")
    task = get_task(task_name, **(task_options or {}))
    masked = wrap_pretrained(model_path)
    tokenizer = load_tokenizer(model_path)
    config_hf = getattr(masked.adapter, "config", None)
    max_len = getattr(config_hf, "max_position_embeddings", None) or getattr(config_hf, "n_positions", None)
    encoded = task.encode(tokenizer, task.examples(n_examples, seed=config.seed), max_length=max_len)
    batch = encoded.batch
    data = PruneData(batch.clean_ids, batch.attention_mask, batch.kl_mask, batch.corrupted_ids)
    result = prune(masked.adapter, data, config, progress=progress, checkpoint_path=out / checkpoint.FILENAME,
                   checkpoint_every=checkpoint_every, resume=resume)

    circuit = Circuit.from_masks(masked.graph, result.edge_log_alpha, result.node_log_alpha,
                                 model={**masked.adapter.summary(), "path": str(model_path)},
                                 ablation=config.ablation)
    empty = flag_empty(circuit, config.target_sparsity, context=f"{task_name} on {model_path}")
    mean = None
    if config.ablation == "mean":
        mean = engine.mean_record([engine.full_run(masked.adapter, batch.clean_ids, batch.attention_mask)],
                                  [batch.attention_mask])
    edge_mask = circuit.mask(masked.graph).to(masked.adapter.dtype)
    circuit_logits, full_logits = _logits_in_batches(masked, batch, edge_mask, config.ablation, mean,
                                                     config.batch_size)
    metrics = task.metrics(circuit_logits, full_logits, batch)
    metrics.update({"edges": len(circuit.edges), "sparsity": circuit.sparsity,
                    "dropped_dangling": circuit.dropped_dangling, "examples": len(batch),
                    "dropped_pairs": encoded.dropped, "seconds": result.seconds, "empty": empty})
    circuit.metrics = metrics

    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "metrics.json", json.dumps({"task": task_name, "config": asdict(config), **metrics,
                                                  "history": result.history}, indent=1) + "\n")
    if draw:
        from .draw import draw_circuit, plot_history

        draw_circuit(circuit, out / "circuit")
        plot_history(result.history, out / "training.png")
    tmp = out / "circuit.json.tmp"
    circuit.to_json(tmp)
    os.replace(tmp, out / "circuit.json")
    return circuit
