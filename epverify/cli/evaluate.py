"""`epverify evaluate --model DIR --task TASK --circuit FILE`: the task metrics of any circuit file.

The circuit may be epverify's own JSON or an EAP-IG Graph JSON (told apart by content; EAP-IG names are mapped
onto the model's graph as `epverify.io.export` describes). A circuit made for another model is refused in one line
naming the difference (layers, heads, embeddings, edge count). The metrics are the ones `epverify prune` reports,
computed the same way (`epverify.eval.Evaluator` with the task's own metrics): the circuit's outputs, with every
other edge ablated, against the full model's on the task's examples.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.engine import ABLATIONS
from ..errors import EpverifyError
from ..io.outputs import check_not_input, write_new
from .command import Command
from .options import DEFAULTS, MODEL, PLACEMENT, TASK, Option, check_task_settings, task_options

REQUIRED = ("model", "task", "circuit")


def cmd_evaluate(settings) -> int:
    import torch

    from ..adapters import wrap_pretrained
    from ..eval.evaluator import Evaluator
    from ..io.export import read_circuit_file
    from ..pipeline import encode_task
    from ..tasks import get_task

    missing = [f"--{name}" for name in REQUIRED if getattr(settings, name) is None]
    if missing:
        raise EpverifyError(f"missing {', '.join(missing)}: give them on the command line or in the --config file")
    if settings.batch_size < 1:
        raise EpverifyError(f"--batch-size {settings.batch_size}: give at least 1")
    check_task_settings(settings)
    task = get_task(settings.task, **task_options(settings))
    check_circuit_file(settings.circuit)
    if settings.json:
        check_not_input(settings.json, settings.circuit, settings.data, settings.model)
    masked = wrap_pretrained(settings.model, dtype=settings.dtype, device=settings.device)
    circuit, kind = read_circuit_file(settings.circuit, masked.graph, d_model=masked.adapter.d_model)
    ablation = settings.ablation or circuit.ablation
    if not circuit.edges and circuit.scores:
        print(f"epverify: warning: {settings.circuit} marks no edge as in the circuit (it holds scores only): the"
              " metrics below are those of the empty circuit", file=sys.stderr)

    encoded = encode_task(masked, settings.model, task, settings.examples, settings.seed)
    print(encoded.summary())
    data = encoded.data
    evaluator = Evaluator(masked, data, ablation, settings.batch_size, task=task)
    metrics = evaluator.evaluate(circuit.mask(masked.graph))
    full = evaluator.evaluate(torch.ones(masked.graph.num_edges), ("accuracy", "logit_diff"))
    metrics.update({"full_model_accuracy": full["accuracy"], "full_model_logit_diff": full["logit_diff"]})

    print(f"circuit {settings.circuit} ({kind}): {len(circuit.edges)} of {circuit.total_edges} edges (sparsity"
          f" {circuit.sparsity:.4f}); {settings.task} on {settings.model}, {len(data)} examples, {ablation} ablation")
    print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if settings.json:
        report = {"circuit": str(settings.circuit), "circuit_format": kind, "model": str(settings.model),
                  "task": settings.task, "ablation": ablation, "edges": len(circuit.edges),
                  "total_edges": circuit.total_edges, "sparsity": circuit.sparsity, "examples": len(data),
                  "dropped_pairs": encoded.dropped, "dropped_by_cause": encoded.dropped_by_cause, **metrics}
        write_new(settings.json, lambda tmp: tmp.write_text(json.dumps(report, indent=1) + "\n"))
    return 0


def check_circuit_file(path) -> None:
    """A circuit file given on the command line exists and is a file (a run's directory names its circuit.json)."""
    path = Path(path)
    if path.is_dir():
        hint = f": give {path / 'circuit.json'}" if (path / "circuit.json").is_file() else \
            ": give the circuit file (circuit.json) a run wrote"
        raise EpverifyError(f"{path} is a directory, not a circuit file{hint}")
    if not path.is_file():
        raise EpverifyError(f"circuit file {path} does not exist")


COMMAND = Command(
    "evaluate", "report the task metrics of any circuit file on a model",
    "Run a circuit (epverify's circuit JSON or an EAP-IG Graph JSON) on a local Hugging Face checkpoint with every"
    " other edge ablated, and report the task's metrics against the full model: KL, logit difference, accuracy,"
    " exact match. A circuit made for another model is refused with the difference named.",
    (MODEL, *PLACEMENT, *TASK,
     Option("circuit", "circuit file: epverify's circuit.json or an EAP-IG Graph JSON", metavar="FILE"),
     Option("ablation", "how removed edges are ablated (default: the circuit's own; interchange for EAP-IG files)",
            choices=ABLATIONS),
     Option("batch_size", "examples per forward pass", DEFAULTS.batch_size, int),
     Option("json", "also write the report as JSON", metavar="PATH")),
    cmd_evaluate,
)
