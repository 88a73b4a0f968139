"""Probes of a program's ground truth and of where its edges matter (the figures of docs/recovery.md, cause 7).

    python bench/recovery_probe.py sweep shuffle_dyck            # per ground-truth edge: which mask values z break it
    python bench/recovery_probe.py swaps shuffle_dyck --ablation zero   # is the ground truth the smallest nearby?
    python bench/recovery_probe.py trace shuffle_dyck --ablation zero --seed 1   # log-alphas during training
    python bench/recovery_probe.py orders shuffle_dyck --ablation zero  # does dropping in list order pick the truth?

`sweep`: with every other ground-truth edge kept (mask 1) and every other edge ablated, set one edge's mask to z
on a grid and report the z at which some decision (argmax, or the numerical output) differs from the full model's,
under zero and interchange ablation. `swaps`: look for another sufficient circuit of the same size or smaller
that differs from the ground truth by exchanging one or two of its edges for one other structural edge, and
for each edge whose removal changes the fewest rows, whether adding up to `--add` structural edges makes up
for its removal. `orders`: drop edges greedily in list order (the rule before 2026-11-27) for the structural
list, its reverse and 4 seeded shuffles, and compare the circuits each ends in with the recorded truth (the
least-change rule of epverify/tracr/ground_truth.py). `trace`: train with the default settings and print, every
25 steps, the log-alphas of the ground-truth edges, of the other structural edges, of the rest, and of the edges
into the output.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from epverify.adapters.tracr import TracrAdapter  # noqa: E402
from epverify.eval.evaluator import evaluate  # noqa: E402
from epverify.tracr import zoo  # noqa: E402
from epverify.tracr.ground_truth import TOLERANCE, Verifier, eliminate_in_list_order, structural_edges  # noqa: E402
from epverify.tracr.model import CompiledModel  # noqa: E402
from epverify.tracr.policy import tracr_config, tracr_data  # noqa: E402
from epverify.train import prune  # noqa: E402
from epverify.train.estimators import Score  # noqa: E402

GRID = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def sweep(model: CompiledModel) -> None:
    adapter = TracrAdapter(model)
    graph, data = adapter.graph, tracr_data(model)
    for ablation in ("zero", "interchange"):
        truth = [tuple(e) for e in model.ground_truth[ablation]["edges"]]
        base = torch.zeros(graph.num_edges)
        base[graph.index_of(truth)] = 1.0
        only_low = 0
        for edge in truth:
            mask = base.clone()
            broken = []
            for z in GRID:
                mask[graph.edge_index[edge]] = z
                if evaluate(adapter, data, mask, ablation)["accuracy"] < 1.0:
                    broken.append(z)
            only_low += bool(broken) and max(broken) <= 0.1
            print(f"{ablation:11s} {edge[0]:>10s} > {edge[1]:10s} decisions change at z in {broken}", flush=True)
        print(f"{ablation}: {only_low} of {len(truth)} ground-truth edges change a decision only at z <= 0.1")


def rows_changed(verifier: Verifier, edges) -> int:
    diff = (verifier.outputs(edges) - torch.cat(verifier.full)).abs().amax(-1)
    return int(((diff > TOLERANCE) & verifier.positions).any(1).sum())


def swaps(model: CompiledModel, ablation: str, add: int) -> None:
    verifier = Verifier(model, ablation)
    truth = [tuple(e) for e in model.ground_truth[ablation]["edges"]]
    others = [e for e in structural_edges(model) if e not in truth]
    print(f"{model.name} ({ablation}): {len(truth)} ground-truth edges, {len(others)} other structural edges,"
          f" {verifier.ids.shape[0]} inputs; sufficient: {verifier.agrees(truth)}")
    same, smaller = [], []
    for out in truth:
        rest = [e for e in truth if e != out]
        same += [(out, e) for e in others if verifier.agrees(rest + [e])]
    for pair in itertools.combinations(truth, 2):
        rest = [e for e in truth if e not in pair]
        smaller += [(pair, e) for e in [None, *others] if verifier.agrees(rest + ([e] if e else []))]
    print(f"same-size circuits one exchange away: {same or 'none'}")
    print(f"smaller circuits (two edges out, at most one in): {smaller or 'none'}")
    changed = {e: rows_changed(verifier, [x for x in truth if x != e]) for e in truth}
    fewest = min(changed.values())
    for edge in [e for e, n in changed.items() if n == fewest]:
        rest = [e for e in truth if e != edge]
        made_up = next((extra for k in range(1, add + 1) for extra in itertools.combinations(others, k)
                        if verifier.agrees(rest + list(extra))), None)
        print(f"{edge[0]} > {edge[1]}: removing it changes {fewest} of {verifier.ids.shape[0]} inputs; made up for"
              f" by adding <= {add} structural edges: {made_up or 'no'}")


def trace(model: CompiledModel, ablation: str, seed: int) -> None:
    from dataclasses import replace

    adapter = TracrAdapter(model)
    graph = adapter.graph
    truth = [tuple(e) for e in model.ground_truth[ablation]["edges"]]
    dropped = [e for e in structural_edges(model) if e not in truth]
    groups = {"truth": graph.index_of(truth), "dropped structural": graph.index_of(dropped)}
    rest = torch.ones(graph.num_edges, dtype=torch.bool)
    for index in groups.values():
        rest[index] = False
    output = [graph.edge_index[e] for e in truth if e[1] == "resid_post"]
    snapshots = {}
    estimate = Score.__call__

    def recording(self, params, *args):  # the log-alphas are Score.__call__'s first argument
        snapshots[self.steps + 1] = params[0].detach().clone()
        return estimate(self, params, *args)

    Score.__call__ = recording
    torch.manual_seed(seed)
    result = prune(adapter, tracr_data(model), replace(tracr_config(ablation), seed=seed))
    Score.__call__ = estimate
    for step in range(25, len(result.history) + 1, 25):
        la, h = snapshots[step], result.history[step - 1]
        t, d, r = la[groups["truth"]], la[groups["dropped structural"]], la[rest]
        print(f"step {step:4d}  truth min {t.min():6.2f} median {t.median():6.2f}  dropped structural min"
              f" {d.min():6.2f} max {d.max():6.2f}  rest median {r.median():6.2f} max {r.max():6.2f}  output"
              f" {' '.join(f'{x:5.2f}' for x in la[output].tolist())}  faithfulness {h['faithfulness']:.3f}")
    final = result.edge_log_alpha
    print("final, ground truth: " + ", ".join(f"{w}>{r} {final[graph.edge_index[(w, r)]]:.1f}" for w, r in truth))


def orders(model: CompiledModel, ablation: str) -> None:
    verifier = Verifier(model, ablation)
    structural = list(structural_edges(model))
    truth = frozenset(tuple(e) for e in model.ground_truth[ablation]["edges"])

    listings = {"list": structural, "reversed": structural[::-1]}
    for seed in range(4):
        shuffled = structural[:]
        random.Random(seed).shuffle(shuffled)
        listings[f"shuffle {seed}"] = shuffled
    ends: dict[frozenset, list[str]] = {}
    for name, edges in listings.items():
        ends.setdefault(eliminate_in_list_order(verifier, edges), []).append(name)
    print(f"{model.name} ({ablation}): {len(structural)} structural edges; the recorded truth has {len(truth)}")
    for circuit, names in ends.items():
        label = "the recorded truth" if circuit == truth else (
            f"not the truth: without {sorted(truth - circuit)}, with {sorted(circuit - truth)}")
        print(f"  {len(circuit)} edges from order {', '.join(names)}: {label}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=["sweep", "swaps", "trace", "orders"])
    parser.add_argument("program")
    parser.add_argument("--ablation", default="zero", choices=["zero", "interchange", "mean"])
    parser.add_argument("--seed", type=int, default=0, help="trace: the training seed (default 0)")
    parser.add_argument("--add", type=int, default=3, help="swaps: most structural edges added back (default 3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = CompiledModel.load(zoo.ROOT / args.program)
    if args.probe == "sweep":
        sweep(model)
    elif args.probe == "trace":
        trace(model, args.ablation, args.seed)
    elif args.probe == "orders":
        orders(model, args.ablation)
    else:
        swaps(model, args.ablation, args.add)
    return 0


if __name__ == "__main__":
    sys.exit(main())
