"""Edge Pruning of a Hugging Face model on a task: task -> adapter -> engine -> trainer -> circuit -> metrics."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import EpverifyError
from .eval.checks import flag_empty
from .eval.evaluator import Evaluator
from .io import atomic, checkpoint
from .io.circuit import Circuit
from .io.export import mask_scores
from .scale import distributed
from .tasks import get_task
from .train import PruneConfig, prune

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


def encode_task(masked, model_path: str | Path, task, n_examples: int, seed: int):
    """The task's examples encoded with the tokenizer saved beside the model (an EncodedTask), checked against
    the model: no prompt longer than its positions, no token id beyond its embeddings."""
    tokenizer = load_tokenizer(model_path)
    config_hf = getattr(masked.adapter, "config", None)
    max_len = getattr(config_hf, "max_position_embeddings", None) or getattr(config_hf, "n_positions", None)
    encoded = task.encode(tokenizer, task.examples(n_examples, seed=seed), max_length=max_len)
    data, vocab = encoded.data, getattr(config_hf, "vocab_size", None)
    highest = max(int(data.input_ids.max()), int(data.corrupted_ids.max()))
    if vocab is not None and highest >= vocab:
        raise EpverifyError(f"the tokenizer in {model_path} produces token id {highest} but the model has"
                            f" {vocab} embeddings: the tokenizer does not belong to this model; save the model's"
                            " own tokenizer beside it")
    return encoded


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
    encoded = encode_task(masked, model_path, task, n_examples, config.seed)
    data = encoded.data.to(parallel.device)
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
    # every process evaluates (sharded weights need them all), with no more rows at once than in training
    evaluator = Evaluator(masked, data, config.ablation, parallel.share_size(config.batch_size), task=task)
    circuit.metrics = {**evaluator.evaluate(circuit.mask(masked.graph)), "edges": len(circuit.edges),
                       "sparsity": circuit.sparsity, "dropped_dangling": circuit.dropped_dangling,
                       "examples": len(data), "dropped_pairs": encoded.dropped, "seconds": result.seconds,
                       "empty": empty}
    if parallel.is_main:  # process 0 writes
        _write_outputs(out, circuit, result, task_name, config, draw)
    return circuit


def _write_outputs(out: Path, circuit: Circuit, result, task_name: str, config: PruneConfig, draw: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "metrics.json", json.dumps({"task": task_name, "config": config.to_dict(),
                                                        **circuit.metrics, "history": result.history}, indent=1)
                      + "\n")
    if draw:
        from .io.draw import draw_circuit, plot_history

        draw_circuit(circuit, out / "circuit")
        plot_history(result.history, out / "training.png")
    circuit.to_json(out / "circuit.json")  # last: its presence marks a finished run
