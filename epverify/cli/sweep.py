"""`epverify sweep --model DIR --task TASK --target-sparsity 0.9,0.95,0.98 --seeds 0,1 --out DIR`: one prune run
per target and seed, and the circuit to pick.

Every sub-run is an `epverify prune` run (the same pipeline) in `OUT/target<T>_seed<S>/`, with its own
checkpoint.pt (every --checkpoint-every steps; a sweep checkpoints every 100 when that is 0), metrics.json and
circuit.json, on the same examples (drawn with `--seed`); the seeds change the masks' initialisation, noise and
batches. A sweep started again with the same --out keeps its finished sub-runs, resumes an interrupted one from its
checkpoint and runs the rest. When all are done it writes into OUT:

- `sweep.json`: a row per sub-run (target, seed, edges, sparsity, KL and the task's metrics), and per target the
  pairwise IoU of the seeds' circuits and the consensus's size;
- `consensus_target<T>.json`: the edges kept by a majority of the seeds (`--consensus K`: by at least K);
- `recommended.json`: the consensus circuit at the knee of the KL-against-edges curve (docs/metrics.md, "Sweeps");
- `sweep.png`: KL and the task metric against kept edges, a line per seed, the knee marked.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..errors import EpverifyError
from .command import Command
from .options import MODEL, PLACEMENT, RUN, TASK, TRAINING, Option, check_task_settings, task_options

SWEPT = ("target_sparsity",)
SWEEP_OPTIONS = (
    Option("target_sparsity", "comma-separated target sparsities, each in [0, 1.5] (e.g. 0.9,0.95,0.98)",
           "0.9,0.95,0.98"),
    Option("seeds", "comma-separated training seeds: masks, noise and batches (the examples come from --seed)",
           "0,1"),
    Option("consensus", "the consensus circuit keeps edges found by at least K seeds (default: a majority)",
           type=int, metavar="K"),
)
SKIPPED = ("resume", "overwrite")  # a sweep resumes by running again with the same --out


def _numbers(text: str, kind, flag: str) -> list:
    try:
        values = [kind(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise EpverifyError(f"{flag} {text}: give comma-separated numbers, e.g. {flag} "
                            f"{'0.9,0.95,0.98' if kind is float else '0,1,2'}") from None
    if not values or len(set(values)) != len(values):
        raise EpverifyError(f"{flag} {text}: give at least one value, each once")
    return values


def sub_run_dir(out: Path, target: float, seed: int) -> Path:
    return out / f"target{target:g}_seed{seed}"


def knee(points: list[tuple[float, float]]) -> int:
    """Index of the knee of a curve of (kept edges, KL) points. With both axes scaled to [0, 1], the point farthest
    below the chord from the sparsest circuit to the densest (Kneedle's rule: where adding edges stops paying).
    When no point lies below the chord (fewer than 3 points, or a curve that only drops at its dense end), the
    smallest circuit whose KL is within 10% of the lowest KL."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    best = min(kl for _, kl in points)
    fallback = next(i for i in order if points[i][1] <= best * 1.1 + 1e-9)
    if len(points) < 3:
        return fallback
    xs, ys = [points[i][0] for i in order], [points[i][1] for i in order]
    span_x, span_y = xs[-1] - xs[0], ys[0] - ys[-1]
    if span_x <= 0 or span_y <= 0:  # no trade-off to bend: every size, or every KL, the same
        return fallback
    # the chord runs from (0, 1) to (1, 0) in scaled coordinates; how far each point lies below it
    below = [(1 - (x - xs[0]) / span_x) - (y - ys[-1]) / span_y for x, y in zip(xs, ys)]
    j = max(range(len(order)), key=lambda k: below[k])
    return order[j] if below[j] > 1e-9 else fallback


def run(settings) -> int:
    from ..eval.compare import consensus, seed_stability
    from ..io import atomic
    from .prune import check_settings, prune_config

    targets = _numbers(settings.target_sparsity, float, "--target-sparsity")
    seeds = _numbers(settings.seeds, int, "--seeds")
    majority = len(seeds) // 2 + 1
    need = settings.consensus if settings.consensus is not None else majority
    if not 1 <= need <= len(seeds):
        raise EpverifyError(f"--consensus {settings.consensus}: give a number of seeds from 1 to {len(seeds)}")
    settings.target_sparsity = targets[0]  # checked one at a time below
    check_settings(settings)
    check_task_settings(settings)
    configs = {}
    for target in targets:
        settings.target_sparsity = target
        configs[target] = prune_config(settings)  # validates each target
    out = Path(settings.out)
    if out.exists() and not out.is_dir():
        raise EpverifyError(f"--out {out} is a file: give a directory for the sweep")
    rows, circuits = _run_all(settings, out, configs, targets, seeds)
    per_target, agreed = [], []
    for target in targets:
        found = circuits[target]
        agreed.append(consensus(found, need))
        path = agreed[-1].to_json(out / f"consensus_target{target:g}.json")
        mine = [r for r in rows if r["target"] == target]
        per_target.append({"target": target, "mean_edges": sum(r["edges"] for r in mine) / len(mine),
                           "mean_kl": sum(r.get("kl", 0.0) for r in mine) / len(mine),
                           "iou": seed_stability(found), "consensus_edges": len(agreed[-1].edges),
                           "consensus_file": str(path)})
    at = knee([(t["mean_edges"], t["mean_kl"]) for t in per_target])
    chosen, recommended = per_target[at], agreed[at]
    recommended.metrics = {**recommended.metrics, "sweep_knee_target": chosen["target"]}
    recommended.to_json(out / "recommended.json")
    report = {"targets": targets, "seeds": seeds, "consensus": f"{need} of {len(seeds)}", "runs": rows,
              "per_target": per_target, "knee_target": chosen["target"],
              "recommended": str(out / "recommended.json")}
    atomic.write_text(out / "sweep.json", json.dumps(report, indent=1) + "\n")
    from ..io.draw import plot_sweep

    plot_sweep(rows, chosen["target"], out / "sweep.png")  # always: --no-draw skips the sub-runs' drawings
    _print_table(rows, per_target, chosen, out, need, len(seeds))
    return 0


def _run_all(settings, out: Path, configs: dict, targets: list, seeds: list):
    """Every sub-run in order, each finished, resumed or started: (rows, circuits by target)."""
    from ..io import checkpoint
    from ..io.circuit import Circuit
    from ..io.progress import TrainingProgress
    from ..pipeline import prune_on_task
    from .prune import _absolute

    model = _absolute(settings.model)
    runs = [(t, s) for t in targets for s in seeds]
    print(f"epverify sweep: {len(targets)} targets x {len(seeds)} seeds = {len(runs)} prune runs into {out}",
          flush=True)
    rows, circuits, started, ran = [], {}, time.perf_counter(), 0
    for i, (target, seed) in enumerate(runs, 1):
        sub = sub_run_dir(out, target, seed)
        if (sub / "circuit.json").is_file():
            circuit = Circuit.from_json(sub / "circuit.json")
            print(f"run {i}/{len(runs)}: target {target:g}, seed {seed}: finished before, kept", flush=True)
        else:
            resume = (sub / checkpoint.FILENAME).is_file()
            eta = ""
            if ran:
                left = sum(1 for t, s in runs[i - 1:] if not (sub_run_dir(out, t, s) / "circuit.json").is_file())
                eta = f", about {(time.perf_counter() - started) / ran * left / 60:.1f} min left for the sweep"
            print(f"run {i}/{len(runs)}: target {target:g}, seed {seed}"
                  + (" (resuming from its checkpoint)" if resume else "") + eta, flush=True)
            config = replace(configs[target], seed=seed)
            progress = None if settings.quiet else TrainingProgress(config.steps)
            circuit = prune_on_task(model, settings.task, config, sub, n_examples=settings.examples,
                                    task_options=task_options(settings), progress=progress,
                                    checkpoint_every=settings.checkpoint_every or 100, resume=resume,
                                    draw=not settings.no_draw, min_examples=settings.min_examples,
                                    device=settings.device, dtype=settings.dtype, example_seed=settings.seed)
            if progress is not None:
                progress.close()
            ran += 1
        circuits.setdefault(target, []).append(circuit)
        rows.append({"target": target, "seed": seed, "dir": str(sub), "edges": len(circuit.edges),
                     **{k: v for k, v in circuit.metrics.items() if isinstance(v, (int, float))}})

    return rows, circuits


def _print_table(rows, per_target, chosen, out: Path, need: int, n_seeds: int) -> None:
    metric = next((m for m in ("logit_diff", "accuracy") if m in rows[0]), None)
    print(f"\n{'target':>7s} {'seed':>4s} {'edges':>6s} {'sparsity':>8s} {'kl':>9s}"
          + (f" {metric:>10s}" if metric else ""))
    for r in rows:
        print(f"{r['target']:7g} {r['seed']:4d} {r['edges']:6d} {r.get('sparsity', 0.0):8.4f} {r.get('kl', 0.0):9.4f}"
              + (f" {r.get(metric, 0.0):10.4f}" if metric else ""))
    print(f"\n{'target':>7s} {'mean IoU':>8s} {'min IoU':>7s} {'consensus':>9s}  ({need} of {n_seeds} seeds)")
    for t in per_target:
        mark = "  <- knee" if t is chosen else ""
        print(f"{t['target']:7g} {t['iou']['mean_iou']:8.3f} {t['iou']['min_iou']:7.3f} {t['consensus_edges']:9d}"
              f"{mark}")
    print(f"\nrecommended circuit: {out / 'recommended.json'} (target {chosen['target']:g});"
          f" table: {out / 'sweep.json'}", file=sys.stdout, flush=True)


def _options() -> tuple[Option, ...]:
    training = tuple(o for o in TRAINING if o.name not in SWEPT)
    run_options = tuple(o for o in RUN if o.name not in SKIPPED)
    return (MODEL, *PLACEMENT, *TASK, *SWEEP_OPTIONS, *training, *run_options)


COMMAND = Command(
    "sweep", "prune at several target sparsities and seeds, and pick a circuit",
    "Run epverify prune once per target sparsity and seed (each in OUT/target<T>_seed<S>, resumable), then write"
    " sweep.json (per run: edges, KL, task metrics; per target: IoU across seeds), consensus_target<T>.json, the"
    " recommended circuit at the knee of the KL-against-edges curve (recommended.json) and sweep.png. Run it again"
    " with the same --out to resume.",
    _options(),
    run,
)
