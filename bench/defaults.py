"""`epverify prune` before and after its defaults changed: what a user's run gives with each.

    python bench/defaults.py                                  # every shipped trained model and the random GPT-2
    python bench/defaults.py --cases count_gpt2,gpt2-random --seeds 0,1 --json defaults.json
    python bench/defaults.py --defaults exact,now --seeds 0,1,2

Three `PruneConfig` defaults changed for "verified is what runs" (docs/recovery.md): the ceiling on an edge's price
(`max_edge_price`, 0.01 nats per position; before: none), the extraction's redundancy pass (`redundancy_tolerance`,
1e-3; before: off outside Tracr) and how the target binds (`sparsity_constraint`, "at_least"; before: "exact").
`--defaults` picks which to run: `before` (all three as they were), `exact` (the first two changed) and `now`
(`PruneConfig()`). Each case is pruned as `epverify prune` prunes it with no flags (target sparsity 0.95, 3,000
steps, the pathwise estimator, interchange ablation) under each, same seed, and the extracted circuit is measured
on the same data: its edges, its KL to the full model and the task's accuracy, and, for a trained model, precision
and recall against its card's verified circuit. Seconds are training plus extraction, one torch thread per run,
two runs at a time.

Cases: the shipped trained models (each card's dataset) and gpt2-random (a random-weight GPT-2, 4 layers, d_model
256, on 64 IOI prompts: no known circuit, but the shape and task of a user's first run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from init_from import load_case  # noqa: E402  (the same cases as the warm-start bench: gpt2-random, trained models)

from epverify import PruneConfig, prune  # noqa: E402
from epverify.eval.evaluator import Evaluator  # noqa: E402
from epverify.eval.extraction import extract  # noqa: E402
from epverify.eval.recovery import in_processes  # noqa: E402
from epverify.trained.card import shipped  # noqa: E402

# The defaults a run has been given, by name: the paper's (no ceiling, no pass, the target held from both sides),
# then with the ceiling and the pass (2026-12-05 until the target became a floor), then `PruneConfig()`.
DEFAULTS = {"before": {"max_edge_price": 0.0, "redundancy_tolerance": 0.0, "sparsity_constraint": "exact"},
            "exact": {"sparsity_constraint": "exact"},
            "now": {}}


def run(name: str, which: str, seed: int, steps: int) -> dict:
    torch.set_num_threads(1)
    adapter, data, _, truth = load_case(name, steps)  # the case's model and data; prune's config, not its own
    config = replace(PruneConfig(steps=steps, seed=seed), **DEFAULTS[which])
    evaluator = Evaluator(adapter, data, config.ablation)
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = prune(adapter, data, config)
    circuit = extract(evaluator, result, config)
    seconds = time.perf_counter() - start
    metrics = evaluator.evaluate(circuit.mask(evaluator.graph))
    row = {"case": name, "defaults": which, "seed": seed, "edges": len(circuit.edges),
           "total_edges": circuit.total_edges, "sparsity": round(circuit.sparsity, 4),
           "kl": metrics[evaluator.loss_name], "accuracy": metrics.get("accuracy"),
           "redundant_dropped": circuit.dropped_redundant, "seconds": round(seconds, 1)}
    if truth is not None:
        found, truth = set(circuit.edges), set(truth)
        row["precision"] = len(found & truth) / len(found) if found else 0.0
        row["recall"] = len(found & truth) / len(truth)
        row["exact"] = found == truth
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="", help="comma-separated; default: every trained model, gpt2-random")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=PruneConfig().steps)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--defaults", default="before,now", help=f"comma-separated, of {', '.join(DEFAULTS)}")
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args(argv)
    cases = args.cases.split(",") if args.cases else [*(p.name for p in shipped()), "gpt2-random"]
    seeds = [int(s) for s in args.seeds.split(",")]
    which = args.defaults.split(",")
    unknown = sorted(set(which) - set(DEFAULTS))
    if unknown:
        parser.error(f"unknown defaults {', '.join(unknown)}: choose from {', '.join(DEFAULTS)}")
    jobs = [(c, w, s, args.steps) for c in cases for s in seeds for w in which]
    rows = []
    for row in in_processes(run, jobs, args.workers):
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print("| case | seed | defaults | edges | sparsity | KL | accuracy | precision | recall | exact | s |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in rows:
        cells = [r["case"], r["seed"], r["defaults"], f"{r['edges']}/{r['total_edges']}", f"{r['sparsity']:.3f}",
                 f"{r['kl']:.2g}", "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}",
                 *((f"{r['precision']:.2f}", f"{r['recall']:.2f}", "yes" if r["exact"] else "no")
                   if "recall" in r else ("-", "-", "-")), r["seconds"]]
        print("| " + " | ".join(map(str, cells)) + " |")
    for name in which:
        mine = [r for r in rows if r["defaults"] == name]
        known = [r for r in mine if "recall" in r]
        print(f"{name}: median KL {statistics.median(r['kl'] for r in mine):.2g}, median sparsity "
              f"{statistics.median(r['sparsity'] for r in mine):.3f}, truth contained "
              f"{sum(r['recall'] == 1.0 for r in known)}/{len(known)}, exact {sum(r['exact'] for r in known)}/"
              f"{len(known)}, median s {statistics.median(r['seconds'] for r in mine):.1f}")


if __name__ == "__main__":
    main()
