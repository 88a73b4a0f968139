"""Recover every shipped Tracr program under one ablation for a list of seeds; one line per program and seed.

    python bench/recover_zoo.py --ablation zero --seeds 0,1,2,3,4
    python bench/recover_zoo.py --ablation interchange --programs hist,reverse --set steps=600 --set lr=0.05

`--set FIELD=VALUE` overrides a field of the ablation's defaults (`tracr.policy.tracr_config`, or with `--defaults
prune` those of `epverify prune`; for experiments only:
the shipped defaults are what `recover()` uses). Prints the per-seed exact counts, the programs recovered for at
least 4 of the seeds, and the wall time; `--json PATH` also writes every report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from epverify import PruneConfig  # noqa: E402
from epverify.tracr import zoo  # noqa: E402
from epverify.tracr.model import CompiledModel  # noqa: E402
from epverify.tracr.policy import tracr_config  # noqa: E402
from epverify.tracr.recover import recover_many  # noqa: E402


def _parse_set(items: list[str]) -> dict:
    """FIELD=VALUE overrides as a dict for `PruneConfig.from_dict`; `score.FIELD` sets a score estimator field."""
    defaults = PruneConfig().to_dict()
    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.rpartition(".")
        table = defaults[section] if section == "score" else defaults if not section else None
        if table is None or name not in table:
            raise SystemExit(f"--set {item}: PruneConfig has no field {key!r} (fields: {', '.join(defaults)},"
                             f" score.{', score.'.join(defaults['score'])})")
        kind = type(table[name]) if table[name] is not None else int
        parsed = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        (out.setdefault("score", {}) if section else out)[name] = parsed
    return out


def _with(config: PruneConfig, overrides: dict) -> PruneConfig:
    values = config.to_dict()
    values["score"] = {**values["score"], **overrides.get("score", {})}
    return PruneConfig.from_dict({**values, **{k: v for k, v in overrides.items() if k != "score"}})


def _listing(label: str, edges: list, limit: int = 8) -> str:
    if not edges:
        return ""
    names = [f"{w}>{r}" for w, r in edges[:limit]]
    more = f" +{len(edges) - limit} more" if len(edges) > limit else ""
    return f"  {label} {len(edges)}: {', '.join(names)}{more}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablation", default="interchange", choices=["interchange", "zero", "mean"])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--programs", default="all", help="comma-separated program names, or 'all'")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field of the ablation's defaults (experiments only)")
    parser.add_argument("--output-scale", type=float, help="override TracrAdapter.output_scale (experiments only)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: these models are tiny, and a second thread only helps when"
                             " the machine is otherwise idle; 0 leaves torch's default)")
    parser.add_argument("--workers", type=int, default=1,
                        help="recover this many programs at once, one process of one torch thread each (default 1;"
                             " `epverify recover all` uses one per CPU)")
    parser.add_argument("--json", metavar="PATH", help="also write every report as JSON")
    parser.add_argument("--defaults", choices=("tracr", "prune"), default="tracr",
                        help="tracr: the compiled programs' preset (what `epverify recover` runs); prune:"
                             " `epverify prune`'s defaults with the recovery exception (target sparsity 1.02), as"
                             " trained models are recovered")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.output_scale is not None:
        from epverify.adapters.tracr import TracrAdapter

        if args.workers > 1:
            raise SystemExit("--output-scale changes a class attribute that worker processes do not see: use"
                             " --workers 1")

        TracrAdapter.output_scale = args.output_scale
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    programs = zoo.names() if args.programs == "all" else [p.strip() for p in args.programs.split(",")]
    overrides = _parse_set(args.set)
    if args.defaults == "prune":  # what `epverify prune` runs, with recovery's one exception (trained models)
        from epverify.trained.recover import recovery_config

        base = recovery_config(args.ablation)
        overrides = {**{k: v for k, v in base.to_dict().items() if k != "score"}, **overrides}
    else:
        base = tracr_config(args.ablation)
    shown = _with(base, overrides)
    config = shown if overrides else None  # None: recover() picks the ablation's defaults itself
    print(f"ablation {args.ablation}; seeds {seeds}; config: target {shown.target_sparsity}, steps {shown.steps},"
          f" warm-up {shown.warmup_steps}, lr {shown.lr}, lambda lr {shown.lambda_lr}, batch {shown.batch_size},"
          f" estimator {shown.estimator}, samples {shown.score.samples}, gate {shown.score.gate}, temperature"
          f" {shown.gate_temperature:.3g}, edge price ceiling {shown.max_edge_price or 'none'}, hold {shown.score.hold}"
          + (f"; overrides {overrides}" if overrides else "")
          + (f"; output_scale {args.output_scale}" if args.output_scale is not None else ""), flush=True)
    print(f"{'program':18s} {'seed':>4s} {'edges':>6s} {'truth':>5s} {'found':>5s} {'prec':>6s} {'recall':>6s}"
          f" {'redund':>6s} {'loss':>9s} {'acc':>6s} {'sec':>6s}  result", flush=True)

    start = time.perf_counter()
    reports, exact = [], {}
    train_seconds = 0.0
    seed_wall = {}
    models = [CompiledModel.load(zoo.ROOT / name) for name in programs]
    for seed in seeds:
        seed_start = time.perf_counter()
        for name, r in zip(programs, recover_many(models, args.ablation, seed, config, workers=args.workers)):
            reports.append(r)
            exact[(name, seed)] = r.exact
            train_seconds += r.seconds
            truth, found = {tuple(e) for e in r.truth_edges}, {tuple(e) for e in r.found_edges}
            detail = ""
            if not r.exact:
                missing, extra = sorted(truth - found), sorted(found - truth)
                detail = _listing("missing", missing) + _listing("extra", extra)
            print(f"{name:18s} {seed:4d} {r.total_edges:6d} {len(truth):5d} {len(found):5d} {r.precision:6.3f}"
                  f" {r.recall:6.3f} {r.dropped_redundant:6d} {r.faithfulness:9.2e} {r.accuracy:6.3f}"
                  f" {r.seconds:6.1f}  "
                  f"{'exact' if r.exact else 'NO'}{detail}", flush=True)
        seed_wall[seed] = time.perf_counter() - seed_start
    wall = time.perf_counter() - start

    print()
    for seed in seeds:
        n = sum(exact[(p, seed)] for p in programs)
        print(f"seed {seed}: exact {n}/{len(programs)}, wall {seed_wall[seed]:.1f}s")
    need = min(4, len(seeds))
    per_program = {p: sum(exact[(p, s)] for s in seeds) for p in programs}
    ok = [p for p, n in per_program.items() if n >= need]
    print(f"programs exact for at least {need}/{len(seeds)} seeds: {len(ok)}/{len(programs)}")
    weak = {p: n for p, n in per_program.items() if n < len(seeds)}
    if weak:
        print("programs missed for some seed: " + ", ".join(f"{p} ({n}/{len(seeds)})" for p, n in weak.items()))
    print(f"total exact {sum(exact.values())}/{len(exact)}; recover seconds {train_seconds:.1f}"
          f" ({train_seconds / max(1, len(seeds)):.1f} per seed); wall {wall:.1f}s")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([r.to_dict() for r in reports], indent=1) + "\n")
    return 0 if len(ok) == len(programs) and all(exact[(p, seeds[0])] for p in programs) else 1


if __name__ == "__main__":
    sys.exit(main())
