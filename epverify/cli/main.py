"""The `epverify` command line: one console script, one subcommand per job.

Every user error (EpverifyError) is printed as one line and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from ..errors import EpverifyError
from ..io import atomic


# ----- recover ---------------------------------------------------------------------------------------------------
def _parse_vocab(text: str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise EpverifyError("--vocab is empty: give comma-separated tokens, e.g. --vocab a,b,c")
    return [int(t) if t.lstrip("-").isdigit() else t for t in items]


def _user_program(spec: str, args):
    """Compile FILE.py:FUNCTION, a function returning a RASP program."""
    from ..tracr.compile import compile_rasp
    from ..tracr.data import default_recipe

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
    from ..tracr import zoo
    from ..tracr.model import CompiledModel

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
    from ..tracr.recover import recover_many

    models = _programs(args.program, args)
    head = ["program", "edges", "truth", "found", "precision", "recall", "auc", "loss", "accuracy", "steps",
            "seconds", "exact"]
    print(f"ablation: {args.ablation}, seed: {args.seed}")
    print("  ".join(f"{h:>9s}" if i else f"{h:18s}" for i, h in enumerate(head)))
    reports = []
    for r in recover_many(models, ablation=args.ablation, seed=args.seed):  # one process per CPU
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
    from ..tracr import zoo
    from ..tracr.model import CompiledModel

    print(f"{'program':18s} {'layers':>6s} {'heads':>5s} {'d_model':>7s} {'edges':>6s} {'zero':>5s} "
          f"{'interchange':>11s} {'mean':>5s}  source")
    for name in zoo.names():
        m = CompiledModel.load(zoo.ROOT / name)
        gt = {a: len(g["edges"]) for a, g in m.ground_truth.items()}
        print(f"{name:18s} {m.n_layers:6d} {m.n_heads:5d} {m.d_model:7d} {m.total_edges:6d} {gt.get('zero', 0):5d} "
              f"{gt.get('interchange', 0):11d} {gt.get('mean', 0):5d}  {m.source}")
    return 0


# ----- prune -----------------------------------------------------------------------------------------------------
PRUNE_REQUIRED = ("model", "task", "out")


def cmd_prune(args) -> int:
    from ..io import checkpoint
    from ..io.progress import TrainingProgress
    from ..pipeline import check_out_dir, clear_out_dir, prune_on_task
    from ..scale.distributed import is_main_process, quiet_unless_main
    from ..train import PruneConfig

    quiet_unless_main()  # under `accelerate launch` with several processes, process 0 prints and writes
    if args.resume:
        saved = Path(args.resume) / RUN_CONFIG
        if not saved.is_file():
            raise EpverifyError(f"no {RUN_CONFIG} in {args.resume}: --resume needs the directory of an earlier"
                                " epverify prune run (its --out)")
        _apply_config(args, _read_toml(saved), saved, args._parser, keep=args._given | {"out"})
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise EpverifyError(f"--out {args.out} differs from --resume {args.resume}: a resumed run writes into"
                                " its own directory; drop --out")
        args.out = args.resume
    missing = [name for name in PRUNE_REQUIRED if getattr(args, name) is None]
    if missing:
        raise EpverifyError("missing " + ", ".join(f"--{m}" for m in missing) + ": give them on the command line or"
                            " in the --config file (e.g. model = \"path/to/checkpoint\")")
    from ..tasks import get_task

    if args.task == "jsonl" and not args.data:
        raise EpverifyError("the jsonl task reads its examples from a file: pass --data FILE.jsonl")
    get_task(args.task, **({"path": args.data} if args.task == "jsonl" else {}))  # unknown task: fail early
    options = {}
    if args.data:
        options["path"] = args.data
    if args.prompt:
        options["prompt"] = args.prompt
    warmup = args.warmup_steps if args.warmup_steps is not None else int(args.steps * 5 / 6)
    args.warmup_steps = warmup
    config = PruneConfig(target_sparsity=args.target_sparsity, steps=args.steps, warmup_steps=warmup, lr=args.lr,
                         lambda_lr=args.lambda_lr, batch_size=args.batch_size, ablation=args.ablation,
                         node_masks=args.node_masks, seed=args.seed, checkpoint_layers=args.checkpoint_layers)
    config.validate()
    if args.checkpoint_every < 0:
        raise EpverifyError(f"--checkpoint-every {args.checkpoint_every}: give a number of steps, or 0 for none")
    out = check_out_dir(args.out, resume=bool(args.resume), overwrite=args.overwrite)
    resolved = _resolved_config(args)
    print(("resuming " if args.resume else "") + "epverify prune with:")
    for key, value in resolved.items():
        print(f"  {key} = {_toml_value(value)}")
    sys.stdout.flush()

    def ready():  # model, tokenizer and data checked: only now touch --out
        if not is_main_process():
            return
        clear_out_dir(out, resume=bool(args.resume))
        if not args.resume:
            _write_toml(out / RUN_CONFIG, resolved)
        print(f"config saved in {out / RUN_CONFIG}", flush=True)

    progress = None if args.quiet else TrainingProgress(config.steps)
    circuit = prune_on_task(args.model, args.task, config, out, n_examples=args.examples, task_options=options,
                            progress=progress, checkpoint_every=args.checkpoint_every, resume=bool(args.resume),
                            draw=not args.no_draw, on_ready=ready)
    m = circuit.metrics
    print(f"circuit: {len(circuit.edges)} of {circuit.total_edges} edges (sparsity {circuit.sparsity:.4f}); "
          + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float)))
    written = ["circuit.json", "metrics.json"] + ([] if args.no_draw else ["circuit.png", "circuit.svg",
                                                                          "training.png"])
    print(f"wrote {', '.join(str(out / name) for name in written)}"
          + (f" (checkpoint: {out / checkpoint.FILENAME})" if args.checkpoint_every else ""))
    return 0


# ----- config files ----------------------------------------------------------------------------------------------
# Every flag of a subcommand can come from a TOML file given with --config: keys are the flags' long names without
# the dashes (`target-sparsity` or `target_sparsity`). Flags on the command line win over the file.
RUN_CONFIG = "run.toml"  # the resolved config of a prune run, saved in its --out directory
_NOT_CONFIG = {"help", "config", "func", "command", "resume", "overwrite"}


def _config_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in _NOT_CONFIG and a.dest != argparse.SUPPRESS}


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise EpverifyError(f"config file {path} does not exist: give the path of a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise EpverifyError(f"config file {path} is not valid TOML ({err}): fix the line it names") from None
    except OSError as err:
        raise EpverifyError(f"config file {path} cannot be read ({err.strerror}): check the path and permissions")\
            from None


def _check_value(action: argparse.Action, key: str, value, path: Path):
    """The config value converted as the flag's parser would, or a one-line error."""
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise EpverifyError(f"{path}: {key} must be true or false, not {value!r}")
        return value
    kind = action.type or str
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}.get(kind, lambda v: isinstance(v, str | int | float))
    if not ok(value):
        want = {int: "an integer", float: "a number", str: "a string"}.get(kind, "a value")
        raise EpverifyError(f"{path}: {key} must be {want}, not {value!r}")
    value = kind(value) if kind in (int, float, str) else kind(str(value))
    if action.choices is not None and value not in action.choices:
        raise EpverifyError(f"{path}: {key} = {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def _apply_config(args, values: dict, path: Path, parser: argparse.ArgumentParser, keep: set[str]) -> None:
    """Set args from a config file's values, except the flags in `keep` (given on the command line)."""
    keys = _config_keys(parser)
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        if key not in keys or isinstance(value, dict):
            known = ", ".join(k.replace("_", "-") for k in keys)
            raise EpverifyError(f"{path}: unknown setting {raw_key!r} for epverify {args.command}; known: {known}")
        if key not in keep:
            setattr(args, key, _check_value(keys[key], raw_key, value, path))


def _explicit(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests of the flags written on the command line (so that they win over a config file)."""
    given = set()
    for action in parser._actions:
        for option in action.option_strings:
            if any(a == option or a.startswith(option + "=") for a in argv):
                given.add(action.dest)
    given.update(a.dest for a in parser._actions if not a.option_strings)
    return given


def _resolved_config(args) -> dict:
    keys = _config_keys(args._parser)
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _write_toml(path: Path, values: dict) -> None:
    text = "# epverify prune: the resolved configuration of this run (reuse with --config)\n"
    text += "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
    atomic.write_text(path, text)


# ----- entry point -----------------------------------------------------------------------------------------------
# Subcommands that live beside their own code: each module defines register_cli(subparsers), which adds its
# parser and sets `func` to a function of the parsed args returning the exit status.
COMMAND_MODULES = ("epverify.testing.gate", *(f"epverify.cli.{m}" for m in ("draw", "export", "evaluate")))

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `epverify: error: ...` naming the --help to read, exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # a flag's full name, so a config file can tell what was given
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        where = self.prog.removeprefix("epverify").strip()
        self.exit(2, f"epverify: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="epverify", description="Edge Pruning circuit discovery, verified.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("recover", help="recover the ground-truth circuit of Tracr programs with Edge Pruning",
                       description="Prune compiled Tracr programs and compare the circuits found with their "
                                   "ground truth. Exits 0 only when every program is recovered exactly.")
    p.add_argument("program", help="a shipped program name, 'all', or FILE.py:FUNCTION returning a RASP program")
    p.add_argument("--ablation", default="interchange", choices=["interchange", "zero", "mean"],
                   help="the ablation whose ground truth is compared; it also picks the training defaults"
                        " (zero ablation: a slower schedule, docs/recovery.md)")
    p.add_argument("--json", metavar="PATH", help="also write the reports as JSON")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--vocab", help="FILE.py:FUNCTION only: comma-separated input tokens")
    p.add_argument("--max-seq-len", type=int, help="FILE.py:FUNCTION only: longest input")
    p.add_argument("--causal", action="store_true", help="FILE.py:FUNCTION only: compile with causal attention")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("prune", help="find a circuit in a Hugging Face model on a task",
                       description="Run Edge Pruning on a local Hugging Face checkpoint for a task. Writes into "
                                   "--out: run.toml (the resolved config), checkpoint.pt (every "
                                   "--checkpoint-every steps), metrics.json, circuit.png/svg, training.png and, "
                                   "last, circuit.json.")
    p.add_argument("--model", help="local checkpoint directory (config, weights, tokenizer); required")
    p.add_argument("--task", help="ioi, greater-than, gendered-pronouns (gp), boolean-expressions (boolean), or "
                                  "jsonl; required")
    p.add_argument("--data", help="jsonl task: the file of {clean, corrupted, target, distractor} lines")
    p.add_argument("--prompt", choices=["instruction", "few-shot"], help="boolean-expressions prompt style")
    p.add_argument("--target-sparsity", type=float, default=0.95,
                   help="fraction of edges to remove, in [0, 1.5] (above 1 keeps pushing past that)")
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--warmup-steps", type=int, help="default: 5/6 of the steps")
    p.add_argument("--lr", type=float, default=0.8, help="learning rate of the edge masks")
    p.add_argument("--lambda-lr", type=float, default=0.8, help="learning rate of the Lagrange multipliers")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step")
    p.add_argument("--examples", type=int, default=256, help="number of task examples to generate")
    p.add_argument("--ablation", default="interchange", choices=["interchange", "zero", "mean", "resample"],
                   help="what a removed edge carries: the corrupted input's value, zero, the mean, or a resample")
    p.add_argument("--node-masks", action="store_true", help="also learn a mask per writer")
    p.add_argument("--checkpoint-layers", action="store_true",
                   help="recompute each layer in the backward (less memory, for large models)")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks' noise, the batches and the examples")
    p.add_argument("--out", help="output directory; required")
    p.add_argument("--checkpoint-every", type=int, default=100,
                   help="write OUT/checkpoint.pt every N steps (0: never)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint, with the"
                                                   " config it saved")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or unfinished run in --out")
    p.add_argument("--no-draw", action="store_true", help="skip the PNG/SVG drawings")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("zoo", help="list the shipped Tracr programs and their ground-truth sizes",
                       description="List the shipped compiled programs: size, total edges, and ground-truth "
                                   "edges per ablation.")
    p.set_defaults(func=cmd_zoo)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register_cli(sub)
    for sub_parser in sub.choices.values():
        takes_config = "config" not in {a.dest for a in sub_parser._actions}  # `gate` reads its own TOML
        if takes_config:
            sub_parser.add_argument("--config", metavar="FILE.toml",
                                    help="read any of these flags from a TOML file (flags given here win)")
        sub_parser.set_defaults(_parser=sub_parser, _config_flag=takes_config)
    return parser


def reference_markdown() -> str:
    """docs/cli.md: every subcommand with its flags, generated from the parser (tests/test_cli_reference.py keeps
    the file in sync; regenerate with `make docs`)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = ["# Command-line reference", "",
             "Generated from the argument parser by `make docs` (`epverify.cli.main.reference_markdown`); a test fails",
             "when this file and the parser disagree. Every flag can also come from a TOML file given with `--config`",
             "(keys are the flag names without the leading dashes; flags on the command line win). User errors",
             "print one line, `epverify: error: ...`, and exit with status 2.", ""]
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, p in sub.choices.items():
        lines += [f"## epverify {name}", "", helps.get(name) or "", ""]
        if p.description:
            lines += [p.description, ""]
        lines += ["| argument | default | meaning |", "|---|---|---|"]
        for action in p._actions:
            if action.dest == "help":
                continue
            flag = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}` (positional)"
            if action.choices is not None:
                flag += " {" + ", ".join(map(str, action.choices)) + "}"
            hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
            default = "" if hidden or not action.option_strings else f"`{action.default}`"
            meaning = (action.help or "").replace("|", "\\|")
            lines.append(f"| {flag} | {default} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args._given = _explicit(args._parser, argv)
        if args._config_flag and args.config:
            path = Path(args.config)
            _apply_config(args, _read_toml(path), path, args._parser, keep=args._given)
            args._given |= {k.replace("-", "_") for k in _read_toml(path)}
        return args.func(args)
    except EpverifyError as err:
        print(f"epverify: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("epverify: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
