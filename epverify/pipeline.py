"""Edge Pruning of a Hugging Face model on a task: task -> adapter -> engine -> trainer -> circuit -> metrics."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from .core import engine
from .errors import EpverifyError
from .eval.checks import flag_empty
from .io import atomic, checkpoint
from .io.circuit import Circuit
from .io.export import mask_scores
from .scale import distributed
from .tasks import get_task
from .train.loop import PruneConfig, PruneData, prune

# circuit.json carries every edge's score (sigmoid of its log-alpha; MIB and EAP-IG exports rank by it) up to this
# many edges (GPT-2 small: 32,936, about 1 MB); larger graphs keep their log-alphas in checkpoint.pt only.
SCORED_EDGES = 200_000
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_tokenizer(path: str | Path):
    """The tokenizer saved beside a local checkpoint."""
    from transformers import AutoTokenizer

    if Path(path).is_dir() and not any((Path(path) / name).exists() for name in TOKENIZER_FILES):
        raise EpverifyError(f"no tokenizer files in {path} (looked for {', '.join(TOKENIZER_FILES)}): save the"
                            " tokenizer beside the model with tokenizer.save_pretrained(path)")
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


def check_out_dir(out_dir: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Refuse an --out that would lose work: a finished run (circuit.json) or an unfinished one (a checkpoint) is
    never replaced without `overwrite`. Changes nothing on disk."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EpverifyError(f"--out {out} is a file: give a directory for the run's outputs")
    finished = (out / "circuit.json").exists()
    if resume:
        if finished and not overwrite:
            raise EpverifyError(f"{out} holds a finished run (circuit.json): nothing to resume; pass --overwrite to"
                                " recompute its outputs from the last checkpoint")
        if not (out / checkpoint.FILENAME).is_file():
            raise EpverifyError(f"no checkpoint in {out}: the run stopped before its first checkpoint (written every"
                                " --checkpoint-every steps); start it again with --overwrite")
    elif not overwrite and (finished or (out / checkpoint.FILENAME).exists()):
        what = "a finished run (circuit.json)" if finished else "an unfinished run (checkpoint.pt)"
        hint = "" if finished else f", --resume {out} to continue it,"
        raise EpverifyError(f"{out} already holds {what}: choose another --out{hint} or pass --overwrite")
    return out


def clear_out_dir(out: Path, resume: bool) -> None:
    """Remove the outputs a new (or resumed) run will write, so none of an older run's is mistaken for its own."""
    for name in (*OUTPUTS, *(() if resume else (checkpoint.FILENAME,))):
        (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def prune_on_task(model_path: str | Path, task_name: str, config: PruneConfig, out_dir: str | Path,
                  n_examples: int = 256, task_options: dict | None = None, progress=None,
                  checkpoint_every: int = 0, resume: bool = False, draw: bool = True, on_ready=None) -> Circuit:
    """Prune a local checkpoint on a task and write the run's outputs into out_dir: metrics.json, the drawings
    (circuit.png, circuit.svg, training.png) and, last, circuit.json, so a directory with circuit.json holds a
    finished run. Training state goes to out_dir/checkpoint.pt every `checkpoint_every` steps; `resume`
    continues from it. `on_ready()` is called once the model, tokenizer and examples are loaded and checked, before
    anything is written. Returns the circuit (metrics filled in). An empty circuit is flagged (`metrics["empty"]`)
    and warned about."""
    config.validate()
    out = check_out_dir(out_dir, resume=resume, overwrite=True)
    task = get_task(task_name, **(task_options or {}))
    parallel = distributed.setup()  # one process, unless started by `accelerate launch` (see docs/scale.md)
    config = parallel.adjust(config)
    masked = parallel.wrap_pretrained(model_path)
    tokenizer = load_tokenizer(model_path)
    config_hf = getattr(masked.adapter, "config", None)
    max_len = getattr(config_hf, "max_position_embeddings", None) or getattr(config_hf, "n_positions", None)
    encoded = task.encode(tokenizer, task.examples(n_examples, seed=config.seed), max_length=max_len)
    batch = encoded.batch.to(parallel.device)
    vocab = getattr(config_hf, "vocab_size", None)
    highest = max(int(batch.clean_ids.max()), int(batch.corrupted_ids.max()) if batch.corrupted_ids is not None
                  else 0)
    if vocab is not None and highest >= vocab:
        raise EpverifyError(f"the tokenizer in {model_path} produces token id {highest} but the model has"
                            f" {vocab} embeddings: the tokenizer does not belong to this model; save the model's"
                            " own tokenizer beside it")
    data = PruneData(batch.clean_ids, batch.attention_mask, batch.kl_mask, batch.corrupted_ids)
    if on_ready is not None:
        on_ready()
    result = prune(masked.adapter, data, config, progress=progress if parallel.is_main else None,
                   checkpoint_path=out / checkpoint.FILENAME, checkpoint_every=checkpoint_every, resume=resume,
                   parallel=parallel)

    scores = mask_scores(masked.graph, result.edge_log_alpha) if masked.graph.num_edges <= SCORED_EDGES else {}
    circuit = Circuit.from_masks(masked.graph, result.edge_log_alpha, result.node_log_alpha,
                                 model={**masked.adapter.summary(), "path": str(model_path)},
                                 ablation=config.ablation, scores=scores)
    empty = flag_empty(circuit, config.target_sparsity, context=f"{task_name} on {model_path}")
    mean = None
    if config.ablation == "mean":
        mean = engine.mean_record([engine.full_run(masked.adapter, batch.clean_ids, batch.attention_mask)],
                                  [batch.attention_mask])
    edge_mask = circuit.mask(masked.graph).to(masked.adapter.dtype)
    circuit_logits, full_logits = _logits_in_batches(masked, batch, edge_mask, config.ablation, mean,
                                                     parallel.share_size(config.batch_size))
    metrics = task.metrics(circuit_logits, full_logits, batch)
    metrics.update({"edges": len(circuit.edges), "sparsity": circuit.sparsity,
                    "dropped_dangling": circuit.dropped_dangling, "examples": len(batch),
                    "dropped_pairs": encoded.dropped, "seconds": result.seconds, "empty": empty})
    circuit.metrics = metrics
    if not parallel.is_main:  # every process evaluated (sharded weights need them all); process 0 writes
        return circuit

    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "metrics.json", json.dumps({"task": task_name, "config": asdict(config), **metrics,
                                                  "history": result.history}, indent=1) + "\n")
    if draw:
        from .io.draw import draw_circuit, plot_history

        draw_circuit(circuit, out / "circuit")
        plot_history(result.history, out / "training.png")
    circuit.to_json(out / "circuit.json")  # last: its presence marks a finished run
    return circuit
