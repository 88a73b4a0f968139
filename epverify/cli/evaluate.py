"""`epverify evaluate --model DIR --task TASK --circuit FILE`: the task metrics of any circuit file.

The circuit may be epverify's own JSON or an EAP-IG Graph JSON (told apart by content; EAP-IG names are mapped
onto the model's graph as `epverify.io.export` describes). A circuit made for another model is refused in one line
naming the difference (layers, heads, embeddings, edge count). The metrics are the ones `epverify prune` reports,
computed the same way (`pipeline._logits_in_batches` and the task's `metrics`): the circuit's logits, with every
other edge ablated, against the full model's on the task's examples.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import EpverifyError
from ..io import atomic

REQUIRED = ("model", "task", "circuit")


def cmd_evaluate(args) -> int:
    import torch

    from ..adapters import wrap_pretrained
    from ..eval.evaluator import Evaluator
    from ..io.export import read_circuit_file
    from ..pipeline import encode_task
    from ..tasks import get_task

    missing = [f"--{name}" for name in REQUIRED if getattr(args, name) is None]
    if missing:
        raise EpverifyError(f"missing {', '.join(missing)}: give them on the command line or in the --config file")
    if args.examples < 1 or args.batch_size < 1:
        raise EpverifyError("--examples and --batch-size must be at least 1")
    options = {}
    if args.data:
        options["path"] = args.data
    if args.prompt:
        options["prompt"] = args.prompt
    task = get_task(args.task, **options)
    if not Path(args.circuit).is_file():
        raise EpverifyError(f"circuit file {args.circuit} does not exist")
    masked = wrap_pretrained(args.model)
    circuit, kind = read_circuit_file(args.circuit, masked.graph, d_model=masked.adapter.d_model)
    ablation = args.ablation or circuit.ablation
    if not circuit.edges and circuit.scores:
        print(f"epverify: warning: {args.circuit} marks no edge as in the circuit (it holds scores only): the"
              " metrics below are those of the empty circuit", file=sys.stderr)

    encoded = encode_task(masked, args.model, task, args.examples, args.seed)
    data = encoded.data
    evaluator = Evaluator(masked, data, ablation, args.batch_size, task=task)
    metrics = evaluator.evaluate(circuit.mask(masked.graph))
    full = evaluator.evaluate(torch.ones(masked.graph.num_edges), ("accuracy", "logit_diff"))
    metrics.update({"full_model_accuracy": full["accuracy"], "full_model_logit_diff": full["logit_diff"]})

    print(f"circuit {args.circuit} ({kind}): {len(circuit.edges)} of {circuit.total_edges} edges (sparsity"
          f" {circuit.sparsity:.4f}); {args.task} on {args.model}, {len(data)} examples"
          + (f" ({encoded.dropped} pairs dropped)" if encoded.dropped else "") + f", {ablation} ablation")
    print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if args.json:
        report = {"circuit": str(args.circuit), "circuit_format": kind, "model": str(args.model), "task": args.task,
                  "ablation": ablation, "edges": len(circuit.edges), "total_edges": circuit.total_edges,
                  "sparsity": circuit.sparsity, "examples": len(data), "dropped_pairs": encoded.dropped,
                  **metrics}
        atomic.write_text(args.json, json.dumps(report, indent=1) + "\n")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="report the task metrics of any circuit file on a model",
        description="Run a circuit (epverify's circuit JSON or an EAP-IG Graph JSON) on a local Hugging Face "
                    "checkpoint with every other edge ablated, and report the task's metrics against the full "
                    "model: KL, logit difference, accuracy, exact match. A circuit made for another model is "
                    "refused with the difference named.")
    p.add_argument("--model", help="local checkpoint directory (config, weights, tokenizer)")
    p.add_argument("--task", help="ioi, greater-than, gendered-pronouns (gp), boolean-expressions (boolean), or jsonl")
    p.add_argument("--circuit", metavar="FILE", help="circuit file: epverify's circuit.json or an EAP-IG Graph JSON")
    p.add_argument("--ablation", choices=["interchange", "zero", "mean", "resample"],
                   help="how removed edges are ablated (default: the circuit's own; interchange for EAP-IG files)")
    p.add_argument("--examples", type=int, default=256, help="number of task examples to generate")
    p.add_argument("--batch-size", type=int, default=32, help="examples per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated examples")
    p.add_argument("--data", help="jsonl task: the file of {clean, corrupted, target, distractor} lines")
    p.add_argument("--prompt", choices=["instruction", "few-shot"], help="boolean-expressions prompt style")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    p.set_defaults(func=cmd_evaluate)
