"""`epverify compare --model M --task T --methods edge-pruning,eap,eap-ig,acdc --out DIR`: the circuit-finding
methods on one model, one task, one edge set, in one table.

M is a Hugging Face checkpoint directory (a trained model with a card too: `--task card` uses its dataset and its
circuit is the ground truth), or a compiled Tracr program (a zoo name or its directory: its dataset, its verified
ground truth). Every method runs under the same ablation on the same examples (drawn with `--seed`):

- Edge Pruning: on a checkpoint, exactly `epverify prune` with the options given (its run in OUT/edge-pruning/,
  checkpointed, so an interrupted compare resumes it); on a compiled program, what `epverify recover` runs;
- EAP, EAP-IG (`--ig-steps`) and ACDC (`--acdc-threshold`, `--acdc-max-seconds`: a time budget, after which the
  untried edges stay in its circuit and the table says it stopped early).

Each finished method is saved in OUT/<method>/result.json and kept by a compare run again with the same --out;
OUT/<method>/circuit.json holds its circuit (a score-only method's top-k edges) with every edge's score, ready for
`epverify export ... --to mib`.
The table compares every method at Edge Pruning's circuit size k (each method's top-k edges: KL and the task's
metric), gives MIB's CPR and CMD of each method's logit-difference faithfulness curve, the time, and against a
ground truth the precision and recall of the method's circuit (a score-only method's top-|truth| edges) and the
ROC AUC of its scores. OUT gets compare.json (also --json PATH) and compare.png (the faithfulness curves).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..errors import EpverifyError
from .command import Command
from .options import MODEL, PLACEMENT, RUN, TASK, TRAINING, Option, check_task_settings, task_options

METHODS = ("edge-pruning", "eap", "eap-ig", "acdc")
COMPARE_OPTIONS = (
    Option("methods", f"comma-separated methods, from {', '.join(METHODS)}", ",".join(METHODS)),
    Option("acdc_threshold", "ACDC removes an edge when the loss rises by less than this (nats per position)",
           0.01, float),
    Option("acdc_max_seconds", "stop ACDC after this many seconds (0: no limit); untried edges stay in",
           0.0, float),
    Option("ig_steps", "EAP-IG's integration steps", 5, int),
    Option("json", "also write the table as JSON here", metavar="PATH"),
)
SKIPPED = ("resume", "overwrite")  # a compare resumes by running again with the same --out


class Target:
    """What the methods run on: the model, its data, its evaluator, its ground truth (or None)."""

    def __init__(self, settings):
        from ..pipeline import check_examples
        from ..tracr import names
        from ..trained.card import is_trained_dir

        self.settings, spec = settings, str(settings.model)
        self.compiled = spec in names() or (Path(spec) / "model.json").is_file()
        if self.compiled:
            self._compiled(spec)
            return
        if not Path(spec).is_dir():
            raise EpverifyError(f"--model {spec}: no such directory, and not a shipped program ({', '.join(names())})")
        self._checkpoint(spec, is_trained_dir(spec))
        check_examples(self.encoded, settings.min_examples)

    def _compiled(self, spec: str) -> None:
        from ..adapters import wrap
        from ..eval.evaluator import Evaluator
        from ..tracr import load
        from ..tracr.policy import tracr_data

        model = load(Path(spec) if Path(spec).is_dir() else spec)
        ablation = self.settings.ablation
        if ablation not in model.ground_truth:
            raise EpverifyError(f"{model.name} has a verified ground truth under {', '.join(model.ground_truth)}"
                                f" ablation, not {ablation}: pass --ablation one of those")
        self.name, self.masked, self.task = model.name, wrap(model), None
        self.data = tracr_data(model)
        self.truth = [tuple(e) for e in model.ground_truth[ablation]["edges"]]
        self.evaluator = Evaluator(self.masked, self.data, ablation)

    def _checkpoint(self, spec: str, trained: bool) -> None:
        from ..adapters import wrap_pretrained
        from ..eval.evaluator import Evaluator
        from ..pipeline import CARD_TASK, card_examples, encode_task
        from ..tasks import get_task

        s = self.settings
        self.name = Path(spec).name
        self.masked = wrap_pretrained(spec, s.dtype, s.device)
        self.task = None if s.task == CARD_TASK else get_task(s.task, **task_options(s))
        self.encoded = (card_examples(self.masked, spec) if self.task is None
                        else encode_task(self.masked, spec, self.task, s.examples, s.seed))
        self.data = self.encoded.data.to(self.masked.adapter.device)
        self.truth = None
        if trained and s.ablation in ("interchange", "zero"):
            from ..trained.card import load_card

            self.truth = [tuple(e) for e in load_card(spec, self.masked.graph).truth(s.ablation)]
        self.evaluator = Evaluator(self.masked, self.data, s.ablation, min(s.batch_size, len(self.data)),
                                   task=self.task)


def _methods(text: str) -> list[str]:
    chosen = [m.strip() for m in str(text).split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise EpverifyError(f"--methods {text}: choose from {', '.join(METHODS)} (comma-separated)")
    return chosen


def run(settings) -> int:
    from ..io import atomic
    from .prune import _absolute, check_settings, prune_config

    methods = _methods(settings.methods)
    if settings.acdc_max_seconds < 0:
        raise EpverifyError(f"--acdc-max-seconds {settings.acdc_max_seconds}: give seconds, or 0 for no limit")
    if settings.task is None and not _is_compiled(settings.model):
        raise EpverifyError("missing --task: a checkpoint needs a task (or card, for a trained model)")
    if settings.task is None:
        settings.task = "card"  # unused for a compiled program; satisfies the prune checks
    else:
        check_task_settings(settings)
    if not _is_compiled(settings.model):
        settings.model = _absolute(settings.model)
        check_settings(settings)
    config = prune_config(settings)
    out = Path(settings.out or "")
    if settings.out is None:
        raise EpverifyError("missing --out: give a directory for the comparison")
    if out.exists() and not out.is_dir():
        raise EpverifyError(f"--out {out} is a file: give a directory for the comparison")
    target = Target(settings)
    print(f"epverify compare: {', '.join(methods)} on {target.name} ({target.masked.graph.num_edges} edges,"
          f" {len(target.data)} examples, {settings.ablation} ablation) into {out}", flush=True)
    results, started, ran = {}, time.perf_counter(), 0
    for i, method in enumerate(methods, 1):
        saved = out / method / "result.json"
        if saved.is_file():
            results[method] = json.loads(saved.read_text())
            print(f"method {i}/{len(methods)}: {method}: finished before, kept", flush=True)
            continue
        eta = f", about {(time.perf_counter() - started) / ran * (len(methods) - i + 1) / 60:.1f} min left" if ran \
            else ""
        print(f"method {i}/{len(methods)}: {method}{eta}", flush=True)
        results[method] = _run_method(method, target, settings, config, out)
        atomic.write_text(saved, json.dumps(results[method]) + "\n")
        ran += 1
    report = _report(target, results, methods)
    _write_circuits(target, results, report["k"], out)
    text = json.dumps(report, indent=1) + "\n"
    atomic.write_text(out / "compare.json", text)
    if settings.json:
        atomic.write_text(Path(settings.json), text)
    from ..io.draw import plot_compare

    plot_compare(report, out / "compare.png")
    _print_table(report, out)
    return 0


def _is_compiled(spec) -> bool:
    from ..tracr import names

    return spec is not None and (str(spec) in names() or (Path(str(spec)) / "model.json").is_file())


def _run_method(method: str, target: Target, settings, config, out: Path) -> dict:
    """One method's result as saved: scores in edge order, its circuit (or None), seconds, details."""
    from ..methods import acdc, eap, eap_ig, edge_pruning

    adapter, data, ev = target.masked.adapter, target.data, target.evaluator
    if method == "edge-pruning":
        if target.compiled:
            from ..tracr.policy import tracr_config

            result = edge_pruning(adapter, data, settings.ablation, config=tracr_config(settings.ablation),
                                  seed=settings.seed, evaluator=ev)
            return _saved(result.scores, result.circuit, result.seconds, {"preset": "epverify recover's"})
        return _prune_run(target, settings, config, out / method)
    if method == "eap":
        result = eap(adapter, data, settings.ablation, evaluator=ev)
    elif method == "eap-ig":
        result = eap_ig(adapter, data, settings.ablation, steps=settings.ig_steps, evaluator=ev)
    else:
        result = acdc(adapter, data, settings.ablation, threshold=settings.acdc_threshold, seed=settings.seed,
                      evaluator=ev, max_seconds=settings.acdc_max_seconds or None)
    info = {"stopped_early": bool(result.info.get("stopped_early", False))} if method == "acdc" else {}
    return _saved(result.scores, result.circuit, result.seconds, info)


def _saved(scores: torch.Tensor, circuit, seconds: float, info: dict) -> dict:
    return {"scores": [float(s) for s in scores.tolist()], "circuit": None if circuit is None else circuit.to_dict(),
            "seconds": seconds, "info": info}


def _prune_run(target: Target, settings, config, sub: Path) -> dict:
    """Edge Pruning as `epverify prune` runs it, in OUT/edge-pruning (resumed from its checkpoint if there)."""
    from ..io import checkpoint
    from ..io.progress import TrainingProgress
    from ..pipeline import prune_on_task

    start = time.perf_counter()
    resume = (sub / checkpoint.FILENAME).is_file()
    if resume:
        print("  resuming Edge Pruning from its checkpoint", flush=True)
    progress = None if settings.quiet else TrainingProgress(config.steps)
    circuit = prune_on_task(settings.model, settings.task, config, sub, n_examples=settings.examples,
                            task_options=task_options(settings) if settings.task != "card" else None,
                            progress=progress, checkpoint_every=settings.checkpoint_every or 100, resume=resume,
                            draw=not settings.no_draw, device=settings.device, dtype=settings.dtype)
    if progress is not None:
        progress.close()
    graph = target.masked.graph
    if circuit.scores:  # the log-alphas; kept edges first when a graph was too large to score
        scores = torch.tensor([circuit.scores.get(e, float("-inf")) for e in graph.edges], dtype=torch.float64)
    else:
        scores = circuit.mask(graph).double()
    return _saved(scores, circuit, time.perf_counter() - start, {})


def _write_circuits(target: Target, results: dict, k: int, out: Path) -> None:
    """OUT/<method>/circuit.json for every method but a checkpoint's Edge Pruning (its prune run wrote one): the
    method's circuit (a score-only method's top k) with every edge's score, shifted to be non-negative so that
    MIB's ranking by |score| keeps the method's order (`epverify export OUT/<method>/circuit.json --to mib`)."""
    from ..eval.compare import top_mask
    from ..io.circuit import Circuit
    from ..methods.base import circuit_from_mask

    graph = target.masked.graph
    for method, r in results.items():
        path = out / method / "circuit.json"
        if method == "edge-pruning" and not target.compiled:
            continue
        scores = torch.tensor(r["scores"], dtype=torch.float64)
        circuit = (Circuit.from_dict(r["circuit"]) if r["circuit"] is not None
                   else circuit_from_mask(graph, top_mask(scores, k), target.evaluator.ablation, method=method))
        shifted = scores - min(0.0, float(scores.min()))
        circuit.scores = dict(zip(graph.edges, shifted.tolist()))
        circuit.model = {**target.masked.adapter.summary(), **circuit.model}
        circuit.to_json(path)


def _report(target: Target, results: dict, methods: list[str]) -> dict:
    """The table's rows: every method at Edge Pruning's k (or the truth's size), curves, truth metrics."""
    from ..eval.compare import precision_recall, roc_auc, top_mask, truth_mask
    from ..eval.curves import faithfulness_curve
    from ..io.circuit import Circuit
    from ..methods.base import circuit_from_mask

    graph, ev = target.masked.graph, target.evaluator
    ep = results.get("edge-pruning")
    k = len(ep["circuit"]["edges"]) if ep else (len(target.truth) if target.truth else graph.num_edges // 20)
    rows = []
    for method in methods:
        r = results[method]
        scores = torch.tensor(r["scores"], dtype=torch.float64)
        circuit = None if r["circuit"] is None else Circuit.from_dict(r["circuit"])
        at_k = ev.evaluate(top_mask(scores, k))
        curve = faithfulness_curve(ev, scores, metrics=("logit_diff",))
        row = {"method": method, "edges": None if circuit is None else len(circuit.edges), "k": k,
               **{f"{name}_at_k": value for name, value in at_k.items()}, "cpr": curve.cpr(), "cmd": curve.cmd(),
               "curve": {"counts": curve.counts, "logit_diff": curve.normalized()}, "seconds": r["seconds"],
               **r["info"]}
        if target.truth is not None:
            found = circuit or circuit_from_mask(graph, top_mask(scores, len(target.truth)), ev.ablation)
            row["precision"], row["recall"] = precision_recall(found, set(target.truth))
            row["auc"] = roc_auc(scores, truth_mask(graph, target.truth))
        rows.append(row)
    return {"model": target.name, "num_edges": graph.num_edges, "ablation": ev.ablation, "examples": len(target.data),
            "truth_edges": None if target.truth is None else len(target.truth), "k": k, "rows": rows}


def _print_table(report: dict, out: Path) -> None:
    truth = report["truth_edges"] is not None
    first = report["rows"][0]
    loss = next(key for key in first if key.endswith("_at_k") and key[:-5] in ("kl", "mse"))
    metric = next((f"{m}_at_k" for m in ("logit_diff", "accuracy") if f"{m}_at_k" in first), None)
    head = f"{'method':13s} {'edges':>6s} {loss:>10s}" + (f" {metric:>16s}" if metric else "") + \
        f" {'CPR':>6s} {'CMD':>6s} {'sec':>7s}"
    print(f"\nevery method's top {report['k']} edges (Edge Pruning's circuit size); {report['num_edges']} edges in all")
    print(head + (f" {'precision':>9s} {'recall':>6s} {'AUC':>6s}" if truth else ""))
    for r in report["rows"]:
        edges = "-" if r["edges"] is None else str(r["edges"])
        line = f"{r['method']:13s} {edges:>6s} {r[loss]:10.4f}" + (f" {r[metric]:16.4f}" if metric else "") + \
            f" {r['cpr']:6.3f} {r['cmd']:6.3f} {r['seconds']:7.1f}"
        if truth:
            auc = "-" if r["auc"] is None else f"{r['auc']:.3f}"
            line += f" {r['precision']:9.2f} {r['recall']:6.2f} {auc:>6s}"
        print(line + ("  (stopped early: --acdc-max-seconds)" if r.get("stopped_early") else ""))
    print(f"\ntable: {out / 'compare.json'}; curves: {out / 'compare.png'}", flush=True)


def _options() -> tuple[Option, ...]:
    run_options = tuple(o for o in RUN if o.name not in SKIPPED)
    return (MODEL, *PLACEMENT, *TASK, *COMPARE_OPTIONS, *TRAINING, *run_options)


COMMAND = Command(
    "compare", "run Edge Pruning, EAP, EAP-IG and ACDC on one model and task, in one table",
    "Run the circuit-finding methods on one model (a Hugging Face checkpoint, a trained model with a card, or a"
    " compiled Tracr program) and one task under one ablation: Edge Pruning as epverify prune runs it (resumable),"
    " EAP, EAP-IG and ACDC. Writes OUT/compare.json (each method's top-k at Edge Pruning's k: KL and the task"
    " metric; CPR and CMD; time; precision, recall and ROC AUC against a ground truth where there is one) and"
    " OUT/compare.png. Run it again with the same --out to resume.",
    _options(),
    run,
)
