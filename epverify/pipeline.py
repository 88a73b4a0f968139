"""A Hugging Face checkpoint pruned on a task, end to end: load, encode, prune, extract, evaluate, write.

The run's directory (docs/design.md, "Names and files"): `run.toml` and `checkpoint.pt` are the live state of the
run, written as it goes; its results (`metrics.json`, the drawings and, last, `circuit.json`) are written into a
staging directory and moved over the old ones only when all are complete (`epverify.io.outputs`), so a run that
fails or is interrupted leaves the results it found as they were.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

from .errors import EpverifyError
from .eval.checks import flag_empty, flag_sparsity
from .eval.evaluator import Evaluator
from .eval.extraction import extract
from .io import checkpoint
from .io.circuit import Circuit
from .io.export import mask_scores
from .io.outputs import Outputs
from .scale import distributed
from .tasks import get_task
from .tasks.tokenizer import load_tokenizer
from .train import PruneConfig, prune

# circuit.json carries every edge's score (sigmoid of its log-alpha; MIB and EAP-IG exports rank by it) up to this
# many edges (GPT-2 small: 32,936, about 1 MB); larger graphs keep their log-alphas in checkpoint.pt only.
SCORED_EDGES = 200_000
RESULTS = ("metrics.json", "circuit.png", "circuit.svg", "training.png", "circuit.json")  # committed in this order


def check_run_dir(out_dir: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Refuse an --out that would lose work: a finished run (circuit.json) or an unfinished one (a checkpoint) is
    never replaced without `overwrite`; a resumed run's checkpoint must be readable. Changes nothing on disk."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EpverifyError(f"--out {out} is a file: give a directory for the run's outputs")
    if any(p.exists() and not p.is_dir() for p in out.parents):
        raise EpverifyError(f"--out {out} lies under a file: give a directory for the run's outputs")
    finished = (out / "circuit.json").exists()
    if resume:
        if finished and not overwrite:
            raise EpverifyError(f"{out} holds a finished run (circuit.json): nothing to resume; pass --overwrite to"
                                " recompute its outputs from the last checkpoint")
        if not (out / checkpoint.FILENAME).is_file():
            raise EpverifyError(f"no checkpoint in {out}: the run stopped before its first checkpoint (written every"
                                " --checkpoint-every steps); start it again with --overwrite")
        checkpoint.load(out / checkpoint.FILENAME)  # unreadable: one line now, before anything is loaded or written
    elif not overwrite and (finished or (out / checkpoint.FILENAME).exists()):
        what = "a finished run (circuit.json)" if finished else "an unfinished run (checkpoint.pt)"
        hint = "" if finished else f", --resume {out} to continue it,"
        raise EpverifyError(f"{out} already holds {what}: choose another --out{hint} or pass --overwrite")
    return out


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


CARD_TASK = "card"  # the dataset of a trained model's card (`epverify.trained`), every position after BOS scored


def card_examples(masked, model_path: str | Path):
    """A trained model's card dataset, as the EncodedTask a task would give (nothing dropped)."""
    from .tasks.base import EncodedTask
    from .trained.card import load_card

    data = load_card(model_path, masked.graph).prune_data()
    return EncodedTask(data=data, examples=[None] * len(data))


def check_examples(encoded, min_examples: int | None) -> None:
    """Stop when fewer examples survived encoding than `min_examples` (default: half of those asked for)."""
    used, needed = len(encoded.examples), min_examples
    if needed is None:
        needed = -(-encoded.requested // 2)
    if used < needed:
        raise EpverifyError(f"only {encoded.summary().removeprefix('examples: ')}; {encoded.fix()}; or ask for"
                            f" more with --examples, or prune on these anyway with --min-examples {used}")


def prune_on_task(model_path: str | Path, task_name: str, config: PruneConfig, out_dir: str | Path,
                  n_examples: int = 256, task_options: dict | None = None, progress=None,
                  checkpoint_every: int = 0, resume: bool = False, draw: bool = True, on_ready=None,
                  min_examples: int | None = None, device="auto", dtype="auto",
                  example_seed: int | None = None) -> Circuit:
    """Prune a local checkpoint on a task and write the run into out_dir (module docstring). `on_ready()` is called
    once the model, tokenizer and examples are loaded and checked, before anything is written. Returns the circuit
    (metrics filled in). An empty circuit, and a sparsity far from a target below 1, are warned about. device and
    dtype: as `epverify.scale.device` resolves them (auto: the GPU when there is one). The examples are drawn with
    `example_seed` (default: the config's seed)."""
    config.validate()
    out = check_run_dir(out_dir, resume=resume, overwrite=True)
    task = None if task_name == CARD_TASK else get_task(task_name, **(task_options or {}))
    parallel = distributed.setup(device=device)  # one process, unless started by `accelerate launch` (docs/scale.md)
    config = parallel.adjust(config)
    with Outputs(out) if parallel.is_main else nullcontext() as outputs:  # locked: one command writes `out`
        masked = parallel.wrap_pretrained(model_path, dtype)
        if parallel.is_main:
            print(f"model on {parallel.device}, weights in {str(masked.adapter.dtype).removeprefix('torch.')}",
                  flush=True)
        if task is None:  # --task card: the dataset of a trained model's card
            encoded = card_examples(masked, model_path)
        else:
            encoded = encode_task(masked, model_path, task, n_examples,
                                  config.seed if example_seed is None else example_seed)
        if parallel.is_main:
            print(encoded.summary(), flush=True)
        check_examples(encoded, min_examples)
        data = encoded.data.to(parallel.device)
        if on_ready is not None:
            on_ready()
        result = prune(masked.adapter, data, config, progress=progress if parallel.is_main else None,
                       checkpoint_path=out / checkpoint.FILENAME, checkpoint_every=checkpoint_every, resume=resume,
                       parallel=parallel)
        # every process evaluates (sharded weights need them all), with no more rows at once than in training
        evaluator = Evaluator(masked, data, config.ablation, parallel.share_size(config.batch_size), task=task)
        circuit = _extract(evaluator, masked, result, config, f"{task_name} on {model_path}", str(model_path))
        circuit.metrics.update({**evaluator.evaluate(circuit.mask(masked.graph)), "edges": len(circuit.edges),
                                "sparsity": circuit.sparsity, "dropped_dangling": circuit.dropped_dangling,
                                "dropped_redundant": circuit.dropped_redundant,
                                "examples": len(data), "dropped_pairs": encoded.dropped,
                                "dropped_by_cause": encoded.dropped_by_cause, "seconds": result.seconds})
        if parallel.is_main:
            _write_results(outputs, circuit, result, task_name, config, draw)
    return circuit


def _extract(evaluator: Evaluator, masked, result, config: PruneConfig, context: str, path: str) -> Circuit:
    """The circuit of the trained masks, flagged when it is empty or far from its target sparsity."""
    graph = masked.graph
    scores = mask_scores(graph, result.edge_log_alpha) if graph.num_edges <= SCORED_EDGES else {}
    circuit = extract(evaluator, result, config, model={**masked.adapter.summary(), "path": path}, scores=scores)
    flag_empty(circuit, config.target_sparsity, context=context)
    flag_sparsity(circuit, result.history, config.target_sparsity, context=context)
    return circuit


def _write_results(outputs: Outputs, circuit: Circuit, result, task_name: str, config: PruneConfig,
                   draw: bool) -> None:
    from .io import atomic

    record = {"task": task_name, "config": config.to_dict(), **circuit.metrics, "history": result.history}
    atomic.write_text(outputs.path("metrics.json"), json.dumps(record, indent=1) + "\n")
    if draw:
        from .io.draw import draw_circuit, plot_history

        draw_circuit(circuit, outputs.path("circuit"))
        plot_history(result.history, outputs.path("training.png"))
    circuit.to_json(outputs.path("circuit.json"))
    outputs.commit(list(RESULTS), stale=RESULTS)  # circuit.json last: its presence marks a finished run
