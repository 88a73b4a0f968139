"""The size ladder (epverify.tracr.ladder): compile each rung, verify its ground truth, recover it, time each part.

    python bench/ladder.py                                  # every rung, seed 0, zero and interchange ablation
    python bench/ladder.py --rungs reverse_v26_l10 --seeds 0,1,2,3,4 --json ladder.json
    python bench/ladder.py --rungs small                    # the rungs the test suite runs

Each rung runs in one process on `--threads` torch threads (default 1; `--workers` processes side by side: give
each one thread), as `epverify recover FILE.py:FUNCTION --threads N` would: compile, the ground truth
under zero, interchange and mean ablation (`epverify.tracr.build`), then `epverify recover`'s preset for each
ablation and seed. A row per rung: its truth sizes, exact recoveries per ablation, and the seconds of each part;
"worst" is the longest `epverify recover FILE.py:FUNCTION --ablation A` of the rung would take: compile, that
ablation's ground truth and its slowest recovery ("truth s" is all three ablations' ground truth).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from epverify.eval.recovery import in_processes  # noqa: E402
from epverify.tracr.ladder import BY_NAME, LADDER, SMALL  # noqa: E402


def rung(name: str, seeds: list[int], ablations: list[str], threads: int = 1) -> dict:
    """Compile, verify and recover one rung; what happened and how long each part took."""
    from epverify.tracr.build import compile_entry
    from epverify.tracr.ground_truth import GT_ABLATIONS, ground_truth
    from epverify.tracr.recover import recover

    torch.set_num_threads(threads)
    entry = BY_NAME[name]
    start = time.perf_counter()
    model = compile_entry(entry)
    row = {"rung": name, "vocab": len(entry.vocab), "length": entry.max_seq_len, "edges": model.total_edges,
           "compile": time.perf_counter() - start, "truth": {}, "truth_seconds": {}, "recovery": {}}
    for ablation in GT_ABLATIONS:
        start = time.perf_counter()
        model.ground_truth[ablation] = ground_truth(model, ablation)
        row["truth_seconds"][ablation] = time.perf_counter() - start
        row["truth"][ablation] = len(model.ground_truth[ablation]["edges"])
    row["inputs"] = model.ground_truth["zero"]["checked_on"]
    for ablation in ablations:
        reports = [recover(model, ablation, seed, threads=threads) for seed in seeds]
        row["recovery"][ablation] = [{"seed": seed, "exact": r.exact, "precision": r.precision, "recall": r.recall,
                                      "seconds": r.seconds, **_differences(r)} for seed, r in zip(seeds, reports)]
    row["worst"] = worst(row)
    return row


def _differences(report) -> dict:
    """The truth edges a recovery missed and the edges it added, as [writer, reader] lists."""
    truth, found = set(map(tuple, report.truth_edges)), set(map(tuple, report.found_edges))
    return {"missing": sorted(map(list, truth - found)), "extra": sorted(map(list, found - truth))}


def worst(row: dict) -> float:
    """The longest `epverify recover FILE.py:FUNCTION --ablation A` of the rung: compile, that ablation's ground
    truth, and its slowest recovery over the seeds."""
    return max((row["compile"] + row["truth_seconds"][a] + max(r["seconds"] for r in runs)
                for a, runs in row["recovery"].items()), default=0.0)


def line(row: dict, ablations: list[str]) -> str:
    exact = [f"{sum(r['exact'] for r in row['recovery'][a])}/{len(row['recovery'][a])}" for a in ablations]
    seconds = [f"{max(r['seconds'] for r in row['recovery'][a]):.1f}" for a in ablations]
    truth = "/".join(str(row["truth"][a]) for a in ("zero", "interchange", "mean"))
    return (f"| {row['rung']} | {row['vocab']} | {row['length']} | {row['inputs']} | {row['edges']} | {truth} | "
            + " | ".join(exact) + f" | {row['compile']:.1f} | {sum(row['truth_seconds'].values()):.1f} | "
            + " | ".join(seconds) + f" | {row['worst']:.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rungs", default="all", help="comma-separated rung names, 'small' or 'all'")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--ablations", default="zero,interchange")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rung (a rung alone on the machine:"
                        " one per core)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    names = ([e.name for e in LADDER] if args.rungs == "all" else list(SMALL) if args.rungs == "small"
             else [n.strip() for n in args.rungs.split(",") if n.strip()])
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown rung(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    ablations = [a.strip() for a in args.ablations.split(",")]
    print("| rung | vocab | length | inputs | edges | truth zero/interchange/mean | "
          + " | ".join(f"exact {a}" for a in ablations) + " | compile s | truth s | "
          + " | ".join(f"recover {a} s" for a in ablations) + " | worst s |")
    print("|" + " --- |" * 3 + " ---: |" * (6 + 2 * len(ablations)))
    rows = []
    for row in in_processes(rung, [(n, seeds, ablations, args.threads) for n in names], args.workers):
        rows.append(row)
        print(line(row, ablations), flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["exact"] for row in rows for runs in row["recovery"].values() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
