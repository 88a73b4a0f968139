"""`epverify prune` before and after its defaults changed: what a user's run gives with each.

    python bench/defaults.py                                  # every shipped trained model and the random GPT-2
    python bench/defaults.py --cases count_gpt2,gpt2-random --seeds 0,1 --json defaults.json

Two `PruneConfig` defaults changed for "verified is what runs" (docs/recovery.md): the ceiling on an edge's price
(`max_edge_price`, 0.01 nats per position; before: none) and the extraction's redundancy pass
(`redundancy_tolerance`, 1e-3; before: off outside Tracr). Each case is pruned as `epverify prune` prunes it with
no flags (target sparsity 0.95, 3,000 steps, the pathwise estimator, interchange ablation) under both, same seed,
and the extracted circuit is measured on the same data: its edges, its KL to the full model and the task's
accuracy, and, for a trained model, precision and recall against its card's verified circuit. Seconds are training
plus extraction, one torch thread per run, two runs at a time.

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

import torch  # noqa: E402

from epverify import PruneConfig, prune  # noqa: E402
from epverify.eval.evaluator import Evaluator  # noqa: E402
from epverify.eval.extraction import extract  # noqa: E402
from epverify.eval.recovery import in_processes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEFORE = {"max_edge_price": 0.0, "redundancy_tolerance": 0.0}  # the two defaults as they were


def trained_cases() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "trained_models").glob("*/card.json"))


def load_case(name: str):
    """(masked model, data, truth edges or None)."""
    if name == "gpt2-random":
        from transformers import GPT2Config, GPT2LMHeadModel

        from epverify.adapters import wrap
        from epverify.tasks import get_task
        from epverify.tasks.tokenizer import build_word_tokenizer

        task = get_task("ioi")
        tokenizer = build_word_tokenizer(task.vocabulary())
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=256, n_layer=4,
                                           n_head=4, attn_implementation="eager"))
        return wrap(model), task.encode(tokenizer, task.examples(64, seed=0)).data, None
    from epverify.trained.recover import load

    masked, card = load(ROOT / "trained_models" / name)
    return masked, card.prune_data(), set(card.truth("interchange"))


def run(name: str, which: str, seed: int, steps: int) -> dict:
    torch.set_num_threads(1)
    masked, data, truth = load_case(name)
    config = replace(PruneConfig(steps=steps, seed=seed), **(BEFORE if which == "before" else {}))
    evaluator = Evaluator(masked, data, config.ablation)
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = prune(masked.adapter, data, config)
    circuit = extract(evaluator, result, config)
    seconds = time.perf_counter() - start
    metrics = evaluator.evaluate(circuit.mask(evaluator.graph))
    row = {"case": name, "defaults": which, "seed": seed, "edges": len(circuit.edges),
           "total_edges": circuit.total_edges, "sparsity": round(circuit.sparsity, 4),
           "kl": metrics[evaluator.loss_name], "accuracy": metrics.get("accuracy"),
           "redundant_dropped": circuit.dropped_redundant, "seconds": round(seconds, 1)}
    if truth is not None:
        found = set(circuit.edges)
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
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args(argv)
    cases = args.cases.split(",") if args.cases else [*trained_cases(), "gpt2-random"]
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(c, w, s, args.steps) for c in cases for s in seeds for w in ("before", "now")]
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
    for which in ("before", "now"):
        mine = [r for r in rows if r["defaults"] == which]
        known = [r for r in mine if "recall" in r]
        print(f"{which}: median KL {statistics.median(r['kl'] for r in mine):.2g}, median sparsity "
              f"{statistics.median(r['sparsity'] for r in mine):.3f}, truth contained "
              f"{sum(r['recall'] == 1.0 for r in known)}/{len(known)}, exact {sum(r['exact'] for r in known)}/"
              f"{len(known)}, median s {statistics.median(r['seconds'] for r in mine):.1f}")


if __name__ == "__main__":
    main()
