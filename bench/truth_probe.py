"""What the ground truth's criterion separates, and where the ground truth's time goes (docs/ground_truth.md, "The
criterion"; docs/benchmarks.md, "The size ladder's largest rung").

    python bench/truth_probe.py margins zoo           # every categorical zoo program, every ablation
    python bench/truth_probe.py margins ladder        # the same for the size ladder's rungs (compiled here)
    python bench/truth_probe.py phases shuffle_dyck2_v4_l10 --ablation zero --threads 2
    python bench/truth_probe.py phases shuffle_dyck2_v4_l10 --ablation zero --threads 2 --first-chunk 256
    python bench/truth_probe.py leak shuffle_dyck2_v4_l10 --ablation zero --threads 2

`margins`: per categorical program and ablation, the largest change (KL, nats) of a removal the elimination
accepted, and the smallest change a truth edge's removal makes without changing a decoded output (a removal that
changes one is `BREAKS`); `KL_TOLERANCE` must lie between the two. `phases`: the seconds of each part of one
ground truth (the dataset with its balanced pool, the "alone" deviations, the two eliminations) and the oracle
runs each made; `--first-chunk` sets the first chunk's size (256: every chunk 256 inputs, as before 2026-12-06).
`leak`: how far the truth's outputs are from the full model's, where the truth leaves out edges that carry only
Tracr's attention leak to BOS: the largest move of an output value (with the worst position's outputs) and the
largest KL of the output distribution.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from epverify.tracr import ground_truth as gt  # noqa: E402
from epverify.tracr import ladder, zoo  # noqa: E402
from epverify.tracr.build import compile_entry  # noqa: E402
from epverify.tracr.model import CompiledModel  # noqa: E402


def _models(which: str):
    """(name, compiled model) of the zoo (shipped), the ladder (compiled now) or the named programs."""
    names = ([e.name for e in zoo.ZOO] if which == "zoo" else ladder.names() if which == "ladder"
             else which.split(","))
    for name in names:
        if name in ladder.BY_NAME:
            yield name, compile_entry(ladder.BY_NAME[name])
        else:
            yield name, CompiledModel.load(zoo.ROOT / name)


def margins(which: str) -> None:
    for name, model in _models(which):
        if not model.categorical:
            continue
        for ablation in gt.GT_ABLATIONS:
            truth = gt.ground_truth(model, ablation)
            verifier = gt.Verifier(model, ablation)
            edges = [tuple(e) for e in truth["edges"]]
            kept = [verifier.deviation([x for x in edges if x != e]) for e in edges]
            least_kept = min((d for d in kept if d != gt.BREAKS), default=None)
            most_dropped = max((d["deviation"] for d in truth["dropped"]), default=None)
            print(f"{name} {ablation}: {len(edges)} edges; largest accepted removal {most_dropped}; smallest"
                  f" truth-edge removal that decodes the same {least_kept}", flush=True)


def phases(name: str, ablation: str) -> None:
    (_, model), = _models(name)
    runs = {"n": 0}
    outputs = gt.Verifier.outputs

    def counted(self, edges, rows=slice(None)):
        runs["n"] += 1
        return outputs(self, edges, rows)

    gt.Verifier.outputs = counted
    start = time.perf_counter()
    structural = gt.structural_edges(model)
    verifier = gt.Verifier(model, ablation)
    print(f"dataset and full runs: {time.perf_counter() - start:.1f} s")
    runs["n"], start = 0, time.perf_counter()
    alone = {e: verifier.deviation([x for x in structural if x != e]) for e in structural}
    print(f"alone: {time.perf_counter() - start:.1f} s, {runs['n']} oracle runs")
    for reverse in (False, True):
        runs["n"], start = 0, time.perf_counter()
        kept, _ = gt.eliminate(verifier, structural, reverse_ties=reverse, alone=alone)
        print(f"elimination{' (ties reversed)' if reverse else ''}: {time.perf_counter() - start:.1f} s,"
              f" {runs['n']} oracle runs, {len(kept)} edges kept")


def leak(name: str, ablation: str) -> None:
    (_, model), = _models(name)
    verifier = gt.Verifier(model, ablation)
    truth = [tuple(e) for e in gt.ground_truth(model, ablation)["edges"]]
    full = torch.cat(verifier.full)
    out = torch.cat([verifier.outputs(truth, rows) for rows in verifier.chunks])
    moved = (out - full).abs().amax(-1) * verifier.positions
    row, col = (int(i) for i in torch.nonzero(moved == moved.max())[0])
    at = [[round(v, 4) for v in x[row, col].tolist()] for x in (full, out)]
    print(f"{name} {ablation}: the truth ({len(truth)} edges) moves output values by up to {float(moved.max()):.4f}"
          f" (full model {at[0]}, truth {at[1]}), the output distribution by up to {verifier.deviation(truth):.2e}"
          f" nats (KL)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=["margins", "phases", "leak"])
    parser.add_argument("programs", help="margins: zoo, ladder or comma-separated names; phases, leak: one name")
    parser.add_argument("--ablation", default="zero", choices=list(gt.GT_ABLATIONS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--first-chunk", type=int, default=gt.FIRST_CHUNK)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gt.FIRST_CHUNK = args.first_chunk
    if args.probe == "margins":
        margins(args.programs)
    elif args.probe == "phases":
        phases(args.programs, args.ablation)
    else:
        leak(args.programs, args.ablation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
