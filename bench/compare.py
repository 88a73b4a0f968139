"""Compare circuit-finding methods on one engine and one edge set: one run, one table.

    python bench/compare.py                                  # default programs + the trained induction model
    python bench/compare.py --programs hist,reverse,induction --ablation zero
    python bench/compare.py --programs trained               # every shipped trained model (trained_models/)
    python bench/compare.py --quick                           # small data and short Edge Pruning (smoke test)
    python bench/compare.py --write docs/benchmarks.md        # also (re)write this bench's section there

Methods: Edge Pruning (the baseline for time), EAP, EAP-IG (5 steps) and ACDC (--acdc-threshold), all
under the same ablation, on Tracr zoo programs (against their verified ground truth for that ablation), on the
shipped trained models with known circuits (`trained_models/<name>/card.json`, against the card's verified circuit;
Edge Pruning with what `epverify prune` runs, `epverify.trained.recover.recovery_config`) and on
the trained induction model (`trained_models/induction`, against its reference circuit: one sufficient circuit
found by greedy removal, not a unique truth). Per method and model:

- found: the method's own circuit (Edge Pruning, ACDC) or, for score-only methods (EAP, EAP-IG; marked *),
  its top-|truth| edges; precision and recall of that set against the truth;
- AUC: ROC AUC of the method's edge scores against the truth (`epverify.eval.curves.auc`);
- KL@T and acc@T: faithfulness loss (KL, or squared error for numerical Tracr outputs) and accuracy of every
  method's top-|truth| edges (matched edge counts);
- CPR, CMD: MIB's areas under / between 1 and the normalised logit-difference faithfulness curve;
- sec and xEP: wall time, and its ratio to Edge Pruning's on the same model in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from epverify.adapters.tracr import TracrAdapter  # noqa: E402
from epverify.eval.compare import precision_recall, roc_auc, truth_mask  # noqa: E402
from epverify.eval.curves import faithfulness_curve  # noqa: E402
from epverify.eval.evaluator import Evaluator  # noqa: E402
from epverify.methods import acdc, eap, eap_ig, edge_pruning  # noqa: E402
from epverify.tracr import load as load_program  # noqa: E402
from epverify.tracr.policy import tracr_config, tracr_data  # noqa: E402
from epverify.trained import induction  # noqa: E402
from epverify.trained.card import shipped  # noqa: E402
from epverify.trained.recover import load as load_trained  # noqa: E402
from epverify.trained.recover import recovery_config  # noqa: E402

DEFAULT_PROGRAMS = ("reverse,xproportion,hist,sort_unique,sort,sort_freq,pair_balance,count_less_freq,"
                    "detect_pattern,sum_neighbours,shuffle_dyck,induction")
QUICK_PROGRAMS = "hist,xproportion,induction"
METHODS = ("edge-pruning", "eap", "eap-ig", "acdc")


TRAINED = {path.name: path for path in shipped()}


def load_target(name: str, ablation: str, quick: bool):
    """(adapter, data, truth edges, truth label, Edge Pruning's options) of a zoo program, a shipped trained model
    or `induction`."""
    if name in TRAINED:
        masked, card = load_trained(TRAINED[name])
        config = recovery_config(ablation)
        if quick:
            config = replace(config, steps=100, warmup_steps=50)
        return masked.adapter, card.prune_data(), card.truth(ablation), "truth", {"config": config}
    if name == "induction":
        masked, meta = induction.load()
        data = induction.data(meta, 64 if quick else 256, seed=1)
        config = induction.PRUNE_CONFIG
        if quick:
            config = replace(config, steps=100, warmup_steps=50)
        return masked.adapter, data, [tuple(e) for e in meta["reference_circuit"]], "reference", {"config": config}
    model = load_program(name)
    if ablation not in model.ground_truth:
        raise SystemExit(f"{name} has no ground truth for {ablation} ablation (shipped: "
                         f"{', '.join(model.ground_truth)}); choose another --ablation")
    options = {"config": tracr_config(ablation)}  # the compiled programs' preset
    if quick:
        options["config"] = replace(options["config"], steps=100, warmup_steps=50)
    truth = [tuple(e) for e in model.ground_truth[ablation]["edges"]]
    return TracrAdapter(model), tracr_data(model), truth, "truth", options


def run_method(name: str, adapter, data, ablation: str, ev: Evaluator, options: dict, args):
    if name == "edge-pruning":
        return edge_pruning(adapter, data, ablation, seed=args.seed, **options)
    if name == "eap":
        return eap(adapter, data, ablation, evaluator=ev)
    if name == "eap-ig":
        return eap_ig(adapter, data, ablation, steps=args.ig_steps, evaluator=ev)
    return acdc(adapter, data, ablation, threshold=args.acdc_threshold, seed=args.seed)


def compare(name: str, args) -> list[dict]:
    adapter, data, truth, truth_kind, options = load_target(name, args.ablation, args.quick)
    graph = adapter.graph
    ev = Evaluator(adapter, data, args.ablation)
    truth_set = set(truth)
    mask = truth_mask(graph, truth)
    key = tuple(induction.load_meta()["key_edge"]) if name == "induction" else None
    rows, baseline = [], None
    for method in args.methods:
        result = run_method(method, adapter, data, args.ablation, ev, options, args)
        if method == "edge-pruning":
            baseline = result.seconds
        found = result.circuit if result.circuit is not None else result.top(len(truth))
        precision, recall = precision_recall(found, truth_set)
        matched = ev.evaluate(result.top_mask(len(truth)))
        curve = faithfulness_curve(ev, result.scores, metrics=("logit_diff",))
        rows.append({
            "model": name, "method": method, "edges": graph.num_edges, "truth": len(truth),
            "truth_kind": truth_kind, "found": len(found.edges), "score_only": result.circuit is None,
            "precision": precision, "recall": recall, "auc": roc_auc(result.scores, mask),
            "loss_at_truth": matched[ev.loss_name], "loss_name": ev.loss_name,
            "acc_at_truth": matched["accuracy"], "cpr": curve.cpr(), "cmd": curve.cmd(),
            "seconds": result.seconds, "x_ep": None if baseline is None else result.seconds / baseline,
        })
        if key is not None:
            rank = int((result.ranking() == graph.edge_index[key]).nonzero()[0]) + 1
            rows[-1]["key_edge"] = {"rank": rank, "found": key in set(found.edges)}
        print(format_row(rows[-1]), flush=True)
    return rows


HEADER = ("| model | edges | truth | method | found | precision | recall | AUC | KL@T | acc@T | CPR | CMD |"
          " sec | xEP |")
RULE = "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"


def _num(value, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def format_row(r: dict) -> str:
    truth = f"{r['truth']}{'ref' if r['truth_kind'] == 'reference' else ''}"
    found = f"{r['found']}{'*' if r['score_only'] else ''}"
    loss = _num(r["loss_at_truth"], ".2e") + (" (mse)" if r["loss_name"] == "mse" else "")
    return (f"| {r['model']} | {r['edges']} | {truth} | {r['method']} | {found} | {r['precision']:.2f} |"
            f" {r['recall']:.2f} | {_num(r['auc'], '.3f')} | {loss} | {r['acc_at_truth']:.3f} |"
            f" {r['cpr']:.3f} | {r['cmd']:.3f} | {r['seconds']:.1f} | {_num(r['x_ep'], '.2f')} |")


def summary(rows: list[dict], methods) -> list[str]:
    """Per method: exact known circuits (compiled and trained), their mean AUC, induction key edge, total time vs
    Edge Pruning."""
    out = ["| method | known circuits exact | mean AUC (known) | induction key edge: rank, in found set |"
           " total sec | xEP |", "| --- | ---: | ---: | --- | ---: | ---: |"]
    ep_total = sum(r["seconds"] for r in rows if r["method"] == "edge-pruning") or None
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        known = [r for r in mine if r["truth_kind"] == "truth"]
        aucs = [r["auc"] for r in known if r["auc"] is not None]
        if not known:
            exact = "n/a"
        elif known[0]["score_only"]:
            exact = "n/a (ranks only)"
        else:
            exact = f"{sum(r['precision'] == 1.0 and r['recall'] == 1.0 for r in known)}/{len(known)}"
        key = next((r["key_edge"] for r in mine if "key_edge" in r), None)
        key_text = "n/a" if key is None else f"{key['rank']}, {'yes' if key['found'] else 'no'}"
        total = sum(r["seconds"] for r in mine)
        out.append(f"| {m} | {exact} | {_num(sum(aucs) / len(aucs) if aucs else None, '.3f')} | {key_text} |"
                   f" {total:.1f} | {_num(total / ep_total if ep_total else None, '.2f')} |")
    return out


def write_section(path: Path, text: str, ablation: str) -> None:
    """Replace this bench's section for this ablation in a markdown file (between its markers), or append."""
    start, end = f"<!-- bench/compare.py {ablation}: start -->", f"<!-- bench/compare.py {ablation}: end -->"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{start}\n{text.rstrip()}\n{end}\n"
    if start in old and end in old:
        new = old[: old.index(start)] + section + old[old.index(end) + len(end) + 1 :]
    else:
        new = old.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", default=None,
                        help="comma-separated zoo programs, shipped trained models ('trained': all of them) and/or"
                             " 'induction'")
    parser.add_argument("--ablation", default="interchange", choices=["interchange", "zero", "mean"])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {METHODS}")
    parser.add_argument("--acdc-threshold", type=float, default=0.01)
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small data, short Edge Pruning, few programs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--write", metavar="MARKDOWN",
                        help="(re)write this bench's section of a markdown file")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}: choose from {METHODS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    programs = args.programs or (QUICK_PROGRAMS if args.quick else DEFAULT_PROGRAMS)
    names = [p.strip() for p in programs.split(",") if p.strip()]
    names = [n for p in names for n in (TRAINED if p == "trained" else [p])]

    start = time.perf_counter()
    print(HEADER)
    print(RULE)
    rows = []
    for name in names:
        rows += compare(name, args)
    wall = time.perf_counter() - start
    key = tuple(induction.load_meta()["key_edge"]) if "induction" in names else None
    lines = [HEADER, RULE, *[format_row(r) for r in rows]]
    totals = summary(rows, args.methods)
    print()
    print("\n".join(totals))
    print(f"\nwall {wall:.0f}s")

    if args.write:
        command = "python bench/compare.py " + " ".join(argv if argv is not None else sys.argv[1:])
        trained_only = all(name in TRAINED for name in names)  # its own section: the zoo's table stays
        on = " on the trained models" if trained_only else ""
        text = "\n".join([
            f"## Method comparison{on}, {args.ablation} ablation (`bench/compare.py`)",
            "",
            f"Run {datetime.date.today().isoformat()} on {platform.machine()} with 2 CPU cores "
            f"(torch {torch.__version__}, {torch.get_num_threads()} threads), {args.ablation} ablation; "
            f"total wall time {wall:.0f} s (machine shared with other jobs: load average"
            f" {os.getloadavg()[0]:.1f} at the end). Command: `{command.strip()}`",
            "",
            "Columns: found = the method's circuit (`*`: a score-only method's top-|truth| edges);"
            " precision and recall of it; AUC of the scores against the truth; KL@T (mse for numerical"
            " outputs) and acc@T of each method's top-|truth| edges; CPR and CMD (MIB) of the"
            " logit-difference faithfulness curve; wall seconds and the ratio to Edge Pruning's (xEP).",
            "",
            *lines,
            "",
            *totals,
            "",
        ] + ([f"`ref`: the induction model's reference circuit (greedy, not unique). Key edge of the"
               f" induction model: {key}."] if key else []))
        write_section(Path(args.write), text, f"trained {args.ablation}" if trained_only else args.ablation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
