"""`epverify gate CONFIG.toml`: a CI gate that fails when circuit recovery or faithfulness regresses.

The config names Tracr programs (or directories of trained models with known circuits, recovered as `epverify
prune` runs: epverify.trained.recover), ablations and seeds, and the thresholds every run must meet:

    name = "tracr-quick"                       # optional, shown in the report
    programs = ["count", "hist", "shift_by"]   # shipped names, "all", "trained", or model directories
    ablations = ["interchange"]                # interchange, zero, mean (default: interchange)
    seeds = [0]                                # default: [0]

    [thresholds]                               # at least one; a missing threshold is not checked
    min_exact_fraction = 1.0   # fraction of runs whose circuit equals the ground truth
    min_precision = 1.0        # every run: found edges that are in the ground truth / found edges
    min_recall = 1.0           # every run: ground-truth edges found / ground-truth edges
    max_faithfulness = 1e-3    # every run: the found circuit's loss (KL; squared error if numerical)
    min_accuracy = 1.0         # every run: positions whose decoded output matches the full model

Every (program, ablation, seed) run is `epverify.tracr.recover` with its default settings. The report is one row per
run, then one row per check with its threshold and PASS/FAIL. Exit status: 0 when every check passes, 1 when
any falls short, 2 for a bad config (one line naming the key). Runs use one torch thread: the models are tiny
and extra threads only contend (set EPVERIFY_GATE_THREADS to change it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import EpverifyError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

GATE_ABLATIONS = ("interchange", "zero", "mean")
TOP_LEVEL_KEYS = ("name", "programs", "ablations", "seeds", "thresholds")


@dataclass(frozen=True)
class Threshold:
    key: str
    label: str
    metric: str  # RecoveryReport field, or "exact_fraction"
    minimum: bool  # True: value >= threshold passes; False: value <= threshold passes
    possible: tuple[float, float]  # the range the metric can take (a threshold outside it can never be met)


THRESHOLDS = {t.key: t for t in (
    Threshold("min_exact_fraction", "exact recovery (fraction of runs)", "exact_fraction", True, (0.0, 1.0)),
    Threshold("min_precision", "precision (every run)", "precision", True, (0.0, 1.0)),
    Threshold("min_recall", "recall (every run)", "recall", True, (0.0, 1.0)),
    Threshold("max_faithfulness", "faithfulness loss (every run)", "faithfulness", False, (0.0, math.inf)),
    Threshold("min_accuracy", "accuracy (every run)", "accuracy", True, (0.0, 1.0)),
)}


@dataclass
class GateConfig:
    name: str
    programs: list[str]
    ablations: list[str]
    seeds: list[int]
    thresholds: dict[str, float]
    base: Path = Path(".")  # the directory relative program paths start from


@dataclass
class Run:
    """One recovery of the gate: the seed it ran with and `epverify.tracr.recover`'s report."""

    seed: int
    report: object  # RecoveryReport


@dataclass
class CheckResult:
    threshold: Threshold
    limit: float
    value: float
    passed: bool
    detail: str


# ----- config ----------------------------------------------------------------------------------------------
def load_config(path: str | Path) -> GateConfig:
    """Read and validate a gate config; any problem is an EpverifyError naming the key."""
    path = Path(path)
    if not path.is_file():
        raise EpverifyError(f"gate config {path} does not exist: pass a TOML file (see ci/tracr-quick.toml)")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise EpverifyError(f"{path} is not valid TOML: {err}") from None
    return parse_config(raw, base=path.parent, source=str(path))


def parse_config(raw: dict, base: Path = Path("."), source: str = "gate config") -> GateConfig:
    """Validate a gate config given as a dict (the parsed TOML)."""
    from ..tracr import names

    def bad(key: str, why: str) -> EpverifyError:
        return EpverifyError(f"{source}: bad key {key!r}: {why}")

    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise bad(unknown[0], f"unknown key; the keys are {', '.join(TOP_LEVEL_KEYS)}")

    programs = raw.get("programs")
    if programs == "all":
        programs = names()
    elif programs == "trained":
        from ..trained.card import shipped

        programs = [str(p) for p in shipped()]
    if not isinstance(programs, list) or not programs or not all(isinstance(p, str) for p in programs):
        raise bad("programs", 'give a non-empty list of program names or directories, or "all" or "trained"')
    for program in programs:
        if program not in names() and not (base / program).is_dir():
            raise bad("programs", f"{program!r} is neither a shipped program ({', '.join(names())}) nor a "
                                  "directory of a compiled program or a trained model")

    ablations = raw.get("ablations", ["interchange"])
    if not isinstance(ablations, list) or not ablations or any(a not in GATE_ABLATIONS for a in ablations):
        raise bad("ablations", f"got {ablations!r}; give a non-empty list drawn from "
                               f"{', '.join(GATE_ABLATIONS)} (the ablations with a ground truth)")

    seeds = raw.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise bad("seeds", f"got {seeds!r}; give a non-empty list of non-negative integers, e.g. [0, 1]")

    table = raw.get("thresholds")
    if not isinstance(table, dict) or not table:
        raise bad("thresholds", f"give a [thresholds] table with at least one of {', '.join(THRESHOLDS)}")
    thresholds = {}
    for key, value in table.items():
        if key not in THRESHOLDS:
            raise bad(f"thresholds.{key}", f"unknown threshold; the thresholds are {', '.join(THRESHOLDS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise bad(f"thresholds.{key}", f"expected a number, got {value!r}")
        thresholds[key] = float(value)

    name = raw.get("name", Path(source).stem)
    if not isinstance(name, str):
        raise bad("name", "expected a string")
    return GateConfig(name, list(programs), list(ablations), list(seeds), thresholds, base)


# ----- running and judging ---------------------------------------------------------------------------------
def run_gate(config: GateConfig, progress=None) -> list[Run]:
    """Recover every (program, ablation, seed) in config order; `progress(run)` is called after each."""
    import torch

    from ..tracr import load, names
    from ..tracr.recover import recover
    from ..trained import recover as trained
    from ..trained.card import is_trained_dir

    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("EPVERIFY_GATE_THREADS", "1")))
    runs = []
    try:
        for program in config.programs:
            path = config.base / program
            if program not in names() and is_trained_dir(path):  # a trained model: recovered as prune runs
                def run_one(ablation, seed, path=path):
                    return trained.recover(path, ablation=ablation, seed=seed)
            else:
                model = load(program if program in names() else path)

                def run_one(ablation, seed, model=model):
                    return recover(model, ablation=ablation, seed=seed)
            for ablation in config.ablations:
                for seed in config.seeds:
                    run = Run(seed, run_one(ablation, seed))
                    runs.append(run)
                    if progress is not None:
                        progress(run)
    finally:
        torch.set_num_threads(threads)
    return runs


def _meets(threshold: Threshold, value: float, limit: float) -> bool:
    return value >= limit if threshold.minimum else value <= limit


def judge(config: GateConfig, runs: list[Run]) -> list[CheckResult]:
    """One CheckResult per configured threshold, in config order."""
    results = []
    for key, limit in config.thresholds.items():
        t = THRESHOLDS[key]
        if t.metric == "exact_fraction":
            exact = sum(run.report.exact for run in runs)
            value = exact / len(runs)
            detail = f"{exact}/{len(runs)} runs exact ({_fmt(value)})"
        else:
            values = [getattr(run.report, t.metric) for run in runs]
            value = min(values) if t.minimum else max(values)
            meeting = sum(_meets(t, v, limit) for v in values)
            worst = "lowest" if t.minimum else "highest"
            detail = f"{meeting}/{len(values)} runs meet it ({worst} {_fmt(value)})"
        lo, hi = t.possible
        if t.minimum and limit > hi:
            detail += f"; can never be met: it is at most {_fmt(hi)}"
        if not t.minimum and limit < lo:
            detail += f"; can never be met: it is at least {_fmt(lo)}"
        results.append(CheckResult(t, limit, value, _meets(t, value, limit), detail))
    return results


def run_failures(config: GateConfig, run: Run) -> list[str]:
    """The metrics of this run that miss their threshold (the exact fraction is judged over all runs)."""
    failed = []
    for key, limit in config.thresholds.items():
        t = THRESHOLDS[key]
        if t.metric != "exact_fraction" and not _meets(t, getattr(run.report, t.metric), limit):
            failed.append(t.metric)
    return failed


# ----- report ----------------------------------------------------------------------------------------------
def _fmt(value) -> str:
    if isinstance(value, float):
        if value == 0 or math.isinf(value):
            return f"{value:g}"
        return f"{value:.3f}" if abs(value) >= 1e-3 else f"{value:.1e}"
    return str(value)


RUN_COLUMNS = ("program", "ablation", "seed", "truth", "found", "exact", "precision", "recall", "loss",
               "accuracy", "seconds", "status")
_WIDTHS = (18, 11, 4, 5, 5, 5, 9, 6, 8, 8, 7, 0)


def _line(cells) -> str:
    """A fixed-width row (rows are printed as runs finish, so widths cannot depend on later rows)."""
    out = []
    for i, (cell, width) in enumerate(zip(cells, _WIDTHS, strict=True)):
        out.append(str(cell).ljust(width) if i < 2 or i == len(_WIDTHS) - 1 else str(cell).rjust(width))
    return "  ".join(out).rstrip()


def run_line(config: GateConfig, run: Run) -> str:
    r = run.report
    failed = run_failures(config, run)
    status = "ok" if not failed else "FAIL " + ", ".join(failed)
    if not r.found_edges and r.truth_edges:
        status += " (empty circuit)"
    return _line([r.program, r.ablation, run.seed, len(r.truth_edges), len(r.found_edges),
                  "yes" if r.exact else "NO", _fmt(r.precision), _fmt(r.recall), _fmt(r.faithfulness),
                  _fmt(r.accuracy), f"{r.seconds:.1f}", status])


def check_lines(results: list[CheckResult]) -> list[str]:
    header = ("check", "threshold", "result", "status")
    rows = [(r.threshold.label, f"{'>=' if r.threshold.minimum else '<='} {_fmt(r.limit)}", r.detail,
             "PASS" if r.passed else "FAIL") for r in results]
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in (header, *rows)]


def report_json(config: GateConfig, runs: list[Run], results: list[CheckResult]) -> dict:
    return {
        "gate": config.name,
        "passed": all(r.passed for r in results),
        "checks": [{"key": r.threshold.key, "threshold": r.limit, "value": r.value, "passed": r.passed,
                    "detail": r.detail} for r in results],
        "runs": [{"seed": run.seed, **run.report.to_dict(), "failed": run_failures(config, run)}
                 for run in runs],
    }
