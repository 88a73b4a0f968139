"""Edge Pruning of a Hugging Face model on a task: task -> adapter -> engine -> trainer -> circuit -> metrics."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from . import engine
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


def prune_on_task(model_path: str | Path, task_name: str, config: PruneConfig, out_dir: str | Path,
                  n_examples: int = 256, task_options: dict | None = None, progress=None) -> Circuit:
    """Prune a local checkpoint on a task; writes circuit.json and metrics.json into out_dir and returns the
    circuit (its metrics filled in). An empty circuit is flagged (`metrics["empty"]`) and warned about."""
    config.validate()
    task = get_task(task_name, **(task_options or {}))
    masked = wrap_pretrained(model_path)
    tokenizer = load_tokenizer(model_path)
    config_hf = getattr(masked.adapter, "config", None)
    max_len = getattr(config_hf, "max_position_embeddings", None) or getattr(config_hf, "n_positions", None)
    encoded = task.encode(tokenizer, task.examples(n_examples, seed=config.seed), max_length=max_len)
    batch = encoded.batch
    data = PruneData(batch.clean_ids, batch.attention_mask, batch.kl_mask, batch.corrupted_ids)
    result = prune(masked.adapter, data, config, progress=progress)

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

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    circuit.to_json(out / "circuit.json")
    (out / "metrics.json").write_text(json.dumps({"task": task_name, "config": asdict(config), **metrics,
                                                  "history": result.history}, indent=1) + "\n")
    return circuit
