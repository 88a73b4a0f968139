"""The `epverify` command line: one console script, one subcommand per job.

Every user error (EpverifyError) is printed as one line and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from .errors import EpverifyError


# ----- recover ---------------------------------------------------------------------------------------------------
def _parse_vocab(text: str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise EpverifyError("--vocab is empty: give comma-separated tokens, e.g. --vocab a,b,c")
    return [int(t) if t.lstrip("-").isdigit() else t for t in items]


def _user_program(spec: str, args):
    """Compile FILE.py:FUNCTION, a function returning a RASP program."""
    from .tracr.compile import compile_rasp
    from .tracr.data import default_recipe

    path_text, _, func_name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise EpverifyError(f"{path} does not exist: give FILE.py:FUNCTION with a path to a Python file")
    if args.vocab is None or args.max_seq_len is None:
        raise EpverifyError(f"{spec}: a program from a file needs --vocab a,b,c and --max-seq-len N")
    module_spec = importlib.util.spec_from_file_location(f"epverify_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # the user's file: report it, do not crash
        raise EpverifyError(f"{path} failed to import: {type(err).__name__}: {err}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise EpverifyError(f"{path} has no function {func_name!r}; it must return a RASP program")
    vocab = _parse_vocab(args.vocab)
    model = compile_rasp(func(), vocab, args.max_seq_len, causal=args.causal, name=f"{path.stem}:{func_name}",
                         source=spec)
    model.dataset = default_recipe(vocab, args.max_seq_len, seed=args.seed)
    return model


def _programs(spec: str, args):
    from .tracr import zoo
    from .tracr.model import CompiledModel

    if spec == "all":
        return [CompiledModel.load(zoo.ROOT / name) for name in zoo.names()]
    if spec.endswith(".py") or ".py:" in spec:
        if ":" not in spec:
            raise EpverifyError(f"{spec}: name the function too, as FILE.py:FUNCTION")
        return [_user_program(spec, args)]
    if spec not in zoo.BY_NAME:
        raise EpverifyError(f"unknown program {spec!r}: known programs are {', '.join(zoo.names())}, or 'all',"
                            " or FILE.py:FUNCTION")
    return [CompiledModel.load(zoo.ROOT / spec)]


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return str(value)


def cmd_recover(args) -> int:
    from .recover import recover

    models = _programs(args.program, args)
    head = ["program", "edges", "truth", "found", "precision", "recall", "auc", "loss", "accuracy", "steps",
            "seconds", "exact"]
    print(f"ablation: {args.ablation}, seed: {args.seed}")
    print("  ".join(f"{h:>9s}" if i else f"{h:18s}" for i, h in enumerate(head)))
    reports = []
    for model in models:
        r = recover(model, ablation=args.ablation, seed=args.seed)
        reports.append(r)
        row = [r.program, r.total_edges, len(r.truth_edges), len(r.found_edges), r.precision, r.recall, r.auc,
               r.faithfulness, r.accuracy, r.steps, r.seconds, "yes" if r.exact else "NO"]
        print("  ".join(f"{_fmt(v):>9s}" if i else f"{v:18s}" for i, v in enumerate(row)), flush=True)
    exact = sum(r.exact for r in reports)
    print(f"recovered exactly: {exact}/{len(reports)}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([r.to_dict() for r in reports], indent=1) + "\n")
    return 0 if exact == len(reports) else 1


# ----- zoo -------------------------------------------------------------------------------------------------------
def cmd_zoo(args) -> int:
    from .tracr import zoo
    from .tracr.model import CompiledModel

    print(f"{'program':18s} {'layers':>6s} {'heads':>5s} {'d_model':>7s} {'edges':>6s} {'zero':>5s} "
          f"{'interchange':>11s} {'mean':>5s}  source")
    for name in zoo.names():
        m = CompiledModel.load(zoo.ROOT / name)
        gt = {a: len(g["edges"]) for a, g in m.ground_truth.items()}
        print(f"{name:18s} {m.n_layers:6d} {m.n_heads:5d} {m.d_model:7d} {m.total_edges:6d} {gt.get('zero', 0):5d} "
              f"{gt.get('interchange', 0):11d} {gt.get('mean', 0):5d}  {m.source}")
    return 0


# ----- prune -----------------------------------------------------------------------------------------------------
def cmd_prune(args) -> int:
    from .pipeline import prune_on_task
    from .trainer import PruneConfig

    options = {}
    if args.data:
        options["path"] = args.data
    if args.prompt:
        options["prompt"] = args.prompt
    warmup = args.warmup_steps if args.warmup_steps is not None else int(args.steps * 5 / 6)
    config = PruneConfig(target_sparsity=args.target_sparsity, steps=args.steps, warmup_steps=warmup, lr=args.lr,
                         lambda_lr=args.lambda_lr, batch_size=args.batch_size, ablation=args.ablation,
                         node_masks=args.node_masks, seed=args.seed)

    def progress(record):
        if record["step"] % max(1, args.steps // 20) == 0 or record["step"] == args.steps:
            print(f"step {record['step']:6d}  loss {record['loss']:.4f}  kl {record['faithfulness']:.4f}  "
                  f"sparsity {record['sparsity']:.3f} / {record['target']:.3f}", flush=True)

    circuit = prune_on_task(args.model, args.task, config, args.out, n_examples=args.examples,
                            task_options=options, progress=progress)
    m = circuit.metrics
    print(f"circuit: {len(circuit.edges)} of {circuit.total_edges} edges (sparsity {circuit.sparsity:.4f}); "
          + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float)))
    print(f"wrote {Path(args.out) / 'circuit.json'} and {Path(args.out) / 'metrics.json'}")
    return 0


# ----- entry point -----------------------------------------------------------------------------------------------
# Subcommands that live beside their own code: each module defines register_cli(subparsers), which adds its
# parser and sets `func` to a function of the parsed args returning the exit status.
COMMAND_MODULES: tuple[str, ...] = ("epverify.gate",)

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="epverify", description="Edge Pruning circuit discovery, verified.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("recover", help="recover the ground-truth circuit of Tracr programs with Edge Pruning",
                       description="Prune compiled Tracr programs and compare the circuits found with their "
                                   "ground truth. Exits 0 only when every program is recovered exactly.")
    p.add_argument("program", help="a shipped program name, 'all', or FILE.py:FUNCTION returning a RASP program")
    p.add_argument("--ablation", default="interchange", choices=["interchange", "zero", "mean"])
    p.add_argument("--json", metavar="PATH", help="also write the reports as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", help="FILE.py:FUNCTION only: comma-separated input tokens")
    p.add_argument("--max-seq-len", type=int, help="FILE.py:FUNCTION only: longest input")
    p.add_argument("--causal", action="store_true", help="FILE.py:FUNCTION only: compile with causal attention")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("prune", help="find a circuit in a Hugging Face model on a task",
                       description="Run Edge Pruning on a local Hugging Face checkpoint for a task and write the "
                                   "circuit JSON and its metrics.")
    p.add_argument("--model", required=True, help="local checkpoint directory (config, weights, tokenizer)")
    p.add_argument("--task", required=True,
                   help="ioi, greater-than, gendered-pronouns (gp), boolean-expressions (boolean), or jsonl")
    p.add_argument("--data", help="jsonl task: the file of {clean, corrupted, target, distractor} lines")
    p.add_argument("--prompt", choices=["instruction", "few-shot"], help="boolean-expressions prompt style")
    p.add_argument("--target-sparsity", type=float, default=0.95)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--warmup-steps", type=int, help="default: 5/6 of the steps")
    p.add_argument("--lr", type=float, default=0.8, help="learning rate of the edge masks")
    p.add_argument("--lambda-lr", type=float, default=0.8, help="learning rate of the Lagrange multipliers")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--examples", type=int, default=256, help="number of task examples to generate")
    p.add_argument("--ablation", default="interchange", choices=["interchange", "zero", "mean", "resample"])
    p.add_argument("--node-masks", action="store_true", help="also learn a mask per writer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("zoo", help="list the shipped Tracr programs and their ground-truth sizes",
                       description="List the shipped compiled programs: size, total edges, and ground-truth "
                                   "edges per ablation.")
    p.set_defaults(func=cmd_zoo)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EpverifyError as err:
        print(f"epverify: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("epverify: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
