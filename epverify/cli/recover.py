"""`epverify recover PROGRAM`: prune compiled Tracr programs and compare the circuits with their ground truth."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

from ..errors import EpverifyError
from ..io.outputs import check_not_input, write_new
from .command import Command
from .options import Option


def _parse_vocab(text: str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise EpverifyError("--vocab is empty: give comma-separated tokens, e.g. --vocab a,b,c")
    return [int(t) if t.lstrip("-").isdigit() else t for t in items]


def _user_program(spec: str, settings):
    """Compile FILE.py:FUNCTION, a function returning a RASP program."""
    from ..tracr.compile import compile_rasp

    path_text, _, func_name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise EpverifyError(f"{path} does not exist: give FILE.py:FUNCTION with a path to a Python file")
    if settings.vocab is None or settings.max_seq_len is None:
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
    return compile_rasp(func(), _parse_vocab(settings.vocab), settings.max_seq_len, causal=settings.causal,
                        name=f"{path.stem}:{func_name}", source=spec, seed=settings.seed, balance=settings.balance)


SLOW = 5.0  # seconds: a program from a file that took longer is told where its time went


def _stage(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _compile_user(spec: str, settings) -> tuple:
    """(the compiled program, seconds it took)."""
    start = time.perf_counter()
    model = _user_program(spec, settings)
    seconds = time.perf_counter() - start
    _stage(f"compiled {spec}: {model.n_layers} layers, {model.total_edges} edges ({seconds:.1f} s)")
    return model, seconds


def _user_recovery(model, compile_seconds: float, settings):
    """The ground truth and recovery of a program compiled from a file, saying on stderr what runs and, when it
    all took more than SLOW seconds, where the time went."""
    from ..eval.recovery import torch_threads
    from ..io.progress import TrainingProgress
    from ..tracr.ground_truth import ground_truth
    from ..tracr.policy import tracr_config
    from ..tracr.recover import recover

    compiled = time.perf_counter()
    _stage(f"ground truth under {settings.ablation} ablation ...")
    with torch_threads(_threads(settings)):
        model.ground_truth[settings.ablation] = ground_truth(model, settings.ablation)
    truth = time.perf_counter()
    config = tracr_config(settings.ablation)
    progress = TrainingProgress(config.steps)
    report = recover(model, settings.ablation, settings.seed, config, progress=progress, threads=_threads(settings))
    progress.close()
    times = {"compile": compile_seconds, "ground truth": truth - compiled, "training": report.seconds}
    if sum(times.values()) > SLOW:
        _stage("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    yield report


def _targets(spec: str, settings) -> tuple[str, list]:
    """("compiled", CompiledModels), ("trained", model directories) or ("user", [FILE.py:FUNCTION]) for the PROGRAM
    argument."""
    from ..tracr import load, names
    from ..trained.card import is_trained_dir, shipped

    if spec == "all":
        return "compiled", [load(name) for name in names()]
    if spec == "trained":
        return "trained", shipped()
    if spec.endswith(".py") or ".py:" in spec:
        if ":" not in spec:
            raise EpverifyError(f"{spec}: name the function too, as FILE.py:FUNCTION")
        return "user", [_compile_user(spec, settings)]
    path = Path(spec)
    if path.is_dir():
        if is_trained_dir(path):
            return "trained", [path]
        if (path / "model.json").is_file():
            return "compiled", [load(path)]
        raise EpverifyError(f"{path} is neither a compiled program (model.json) nor a trained model with a known"
                            " circuit (card.json): give a shipped name, a directory of compiled_models/ or"
                            " trained_models/, 'all', 'trained', or FILE.py:FUNCTION")
    if spec not in names():
        raise EpverifyError(f"unknown program {spec!r}: known programs are {', '.join(names())}, or 'all',"
                            " 'trained', a directory, or FILE.py:FUNCTION")
    return "compiled", [load(spec)]


def _threads(settings) -> int:
    """Torch threads for a recovery run alone: --threads, else torch's own (OMP_NUM_THREADS, else one per core)."""
    import torch

    return settings.threads or torch.get_num_threads()


def _reports(kind: str, targets: list, settings):
    """The recoveries, as they finish, and the header line saying what trained. One program runs here with every
    thread it is given; several run in one process per CPU of one thread each."""
    if kind == "trained":
        from ..trained.recover import RECOVERY, recover, recover_many

        if settings.ablation not in ("interchange", "zero"):
            raise EpverifyError(f"trained models have known circuits under interchange and zero ablation, not"
                                f" {settings.ablation}")
        exception = ", ".join(f"{k} {v}" for k, v in RECOVERY.items())
        header = f"estimator: pathwise, epverify prune's defaults (PruneConfig()) but {exception}"
    else:
        from ..tracr.recover import recover, recover_many

        header = "estimator: score, the compiled programs' preset (epverify.tracr.policy; docs/recovery.md)"
        if kind == "user":
            return header, _user_recovery(*targets[0], settings)
    if len(targets) == 1:
        # a generator, like recover_many's: the header is printed before the recovery runs
        return header, (recover(t, settings.ablation, settings.seed, threads=_threads(settings)) for t in targets)
    return header, recover_many(targets, ablation=settings.ablation, seed=settings.seed)


def fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return str(value)


HEAD = ("program", "edges", "truth", "found", "precision", "recall", "auc", "loss", "accuracy", "steps", "seconds",
        "exact")


def run(settings) -> int:
    if settings.threads < 0:
        raise EpverifyError(f"--threads {settings.threads}: give a number of torch threads of at least 1, or 0 for"
                            " torch's own (OMP_NUM_THREADS, else one per core)")
    program_file = settings.program.rpartition(":")[0] if ".py:" in settings.program else None
    if settings.json:
        check_not_input(settings.json, program_file)
    kind, targets = _targets(settings.program, settings)
    if not targets:
        raise EpverifyError("no trained models are shipped here: build them with `make trained`")
    header, results = _reports(kind, targets, settings)
    print(f"ablation: {settings.ablation}, seed: {settings.seed}; {header}")
    print("  ".join(f"{h:>9s}" if i else f"{h:26s}" for i, h in enumerate(HEAD)))
    reports = []
    for r in results:  # one process per CPU
        reports.append(r)
        row = [r.program, r.total_edges, len(r.truth_edges), len(r.found_edges), r.precision, r.recall, r.auc,
               r.faithfulness, r.accuracy, r.steps, r.seconds, "yes" if r.exact else "NO"]
        print("  ".join(f"{fmt(v):>9s}" if i else f"{v:26s}" for i, v in enumerate(row)), flush=True)
    exact = sum(r.exact for r in reports)
    print(f"recovered exactly: {exact}/{len(reports)}")
    if settings.json:
        text = json.dumps([r.to_dict() for r in reports], indent=1) + "\n"
        write_new(settings.json, lambda tmp: tmp.write_text(text), inputs=[program_file])
    return 0 if exact == len(reports) else 1


COMMAND = Command(
    "recover", "recover the known circuits of compiled Tracr programs and trained models with Edge Pruning",
    "Prune compiled Tracr programs (with their preset) or trained models with known circuits (with epverify prune's"
    " own code path and defaults) and compare the circuits found with the known ones. Exits 0 only when every one"
    " is recovered exactly.",
    (
        Option("program", "a shipped program name, 'all' (the compiled zoo), 'trained' (every shipped trained model),"
                          " a directory of compiled_models/ or trained_models/, or FILE.py:FUNCTION returning a RASP"
                          " program", positional=True),
        Option("ablation", "the ablation whose ground truth is compared; it also picks the training defaults (zero"
                           " ablation: a slower schedule, docs/recovery.md)", "interchange",
               choices=("interchange", "zero", "mean")),
        Option("json", "also write the reports as JSON", metavar="PATH"),
        Option("seed", "training seed", 0, int),
        Option("threads", "torch threads when one program is recovered (default: torch's own, OMP_NUM_THREADS or one"
                          " per core); several are recovered in one process per CPU of one thread each", 0, int),
        Option("vocab", "FILE.py:FUNCTION only: comma-separated input tokens"),
        Option("max_seq_len", "FILE.py:FUNCTION only: longest input", type=int),
        Option("causal", "FILE.py:FUNCTION only: compile with causal attention", switch=True),
        Option("balance", "FILE.py:FUNCTION only: sample inputs balanced over the program's output at the last"
                          " position (for an output that uniform inputs leave rare; docs/recovery.md)", switch=True),
    ),
    run,
)
