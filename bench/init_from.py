"""Warm-starting Edge Pruning from attribution scores (`PruneConfig.init_from`) against the cold start.

    python bench/init_from.py                                   # every case below, a table
    python bench/init_from.py --cases gpt2-random,hist --steps 300
    python bench/init_from.py --cases zoo --json zoo.json     # every compiled program ("trained": every trained model)

For each case: one cold run (every mask open at the start) and one warm run per method (eap, eap-ig), same config
and seed. The cold run's final faithfulness is the mean training loss over its last 10% of steps, at its final
expected sparsity. A warm run reaches it at the first step where the mean loss over the 20 steps before is no
higher and its expected sparsity is no lower (minus 0.005). Reported per run: that step (or "never"), the time to
it (the attribution's time included: the warm start's whole cost), the extracted circuit's size and KL, and,
where the model has a ground truth, whether the circuit is it exactly.

Cases: a random-weight GPT-2 on IOI (gpt2-random: 4 layers, d_model 256; gpt2-small-random: GPT-2 small's shape, for
`--device cuda`); shipped trained models (their card's data, the
recovery config); compiled programs (their data, `epverify recover`'s preset).
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

ROOT = Path(__file__).resolve().parents[1]
CASES = ("gpt2-random", "count_gpt2", "hist_llama", "hist", "reverse")
GPT2_SHAPES = {"gpt2-random": {"n_embd": 256, "n_layer": 4, "n_head": 4},  # the CPU case
               "gpt2-small-random": {"n_embd": 768, "n_layer": 12, "n_head": 12}}  # the GPU check's


def load_case(name: str, steps: int | None, device: str = "cpu"):
    """(adapter, data, config, truth edges or None) of a case; the random GPT-2s on `device`."""
    if name in GPT2_SHAPES:
        from transformers import GPT2Config, GPT2LMHeadModel

        from epverify.adapters import wrap
        from epverify.tasks import get_task
        from epverify.tasks.tokenizer import build_word_tokenizer

        task = get_task("ioi")
        tokenizer = build_word_tokenizer(task.vocabulary())
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, **GPT2_SHAPES[name],
                                           attn_implementation="eager")).to(device)
        data = task.encode(tokenizer, task.examples(64, seed=0)).data.to(device)
        return wrap(model).adapter, data, PruneConfig(steps=steps or 600), None
    if (ROOT / "trained_models" / name / "card.json").is_file():
        from epverify.trained.recover import load, recovery_config

        masked, card = load(ROOT / "trained_models" / name)
        config = recovery_config("interchange")
        return masked.adapter, card.prune_data(), replace(config, steps=steps or config.steps), card.truth(
            "interchange")
    from epverify.adapters.tracr import TracrAdapter
    from epverify.tracr import load as load_program
    from epverify.tracr.policy import tracr_config, tracr_data

    model = load_program(name)
    config = tracr_config("interchange")
    return (TracrAdapter(model), tracr_data(model), replace(config, steps=steps or config.steps),
            [tuple(e) for e in model.ground_truth["interchange"]["edges"]])


def attribution_seconds(adapter, data, config: PruneConfig) -> float:
    """What the warm start's attribution costs (the trainer runs the same call before its first step)."""
    from epverify.methods import eap, eap_ig

    if not config.init_from:
        return 0.0
    method = eap if config.init_from == "eap" else eap_ig
    start = time.perf_counter()
    method(adapter, data, config.ablation, evaluator=Evaluator(adapter, data, config.ablation, config.batch_size))
    return time.perf_counter() - start


def run(adapter, data, config: PruneConfig, truth) -> dict:
    attribution = attribution_seconds(adapter, data, config)
    start = time.perf_counter()
    result = prune(adapter, data, config)
    seconds = time.perf_counter() - start
    ev = Evaluator(adapter, data, config.ablation)
    circuit = extract(ev, result, config, model=adapter.summary())
    losses = [h["faithfulness"] for h in result.history]
    sparsities = [h["sparsity"] for h in result.history]
    return {"losses": losses, "sparsities": sparsities, "seconds": seconds, "attribution": attribution,
            "per_step": (seconds - attribution) / len(losses), "edges": len(circuit.edges),
            "kl": ev.evaluate(circuit.mask(adapter.graph))[ev.loss_name],
            "exact": None if truth is None else set(circuit.edges) == {tuple(e) for e in truth}}


def reached(cold: dict, warm: dict) -> int | None:
    """The first step at which the warm run is as faithful as the cold run ended, at no lower sparsity."""
    tail = max(1, len(cold["losses"]) // 10)
    target_loss = statistics.fmean(cold["losses"][-tail:])
    target_sparsity = cold["sparsities"][-1] - 0.005
    for step in range(20, len(warm["losses"]) + 1):
        if (statistics.fmean(warm["losses"][step - 20:step]) <= target_loss
                and warm["sparsities"][step - 1] >= target_sparsity):
            return step
    return None


def expand(cases: str) -> list[str]:
    """Case names, with "zoo" standing for every compiled program and "trained" for every shipped trained model."""
    from epverify.tracr import names
    from epverify.trained.card import shipped

    out: list[str] = []
    for name in (c.strip() for c in cases.split(",") if c.strip()):
        if name == "zoo":
            out += names()
        elif name == "trained":
            out += [p.name for p in shipped()]
        else:
            out.append(name)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: each case's config)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the random GPT-2 cases run (e.g. cuda)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here, one case at a time")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| case | start | steps to the cold run's final loss | seconds to it | circuit edges | circuit KL |"
          " exact |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    records = []
    for name in expand(args.cases):
        adapter, data, config, truth = load_case(name, args.steps, args.device)
        cold = run(adapter, data, config, truth)
        rows = [("cold", cold, len(cold["losses"]), cold["seconds"])]
        for method in ("eap", "eap-ig"):
            warm = run(adapter, data, replace(config, init_from=method), truth)
            step = reached(cold, warm)
            rows.append((method, warm, step, None if step is None else warm["attribution"] + warm["per_step"] * step))
        for label, r, step, seconds in rows:
            exact = "-" if r["exact"] is None else ("yes" if r["exact"] else "no")
            print(f"| {name} | {label} | {'never' if step is None else step} |"
                  f" {'-' if seconds is None else f'{seconds:.1f}'} | {r['edges']} | {r['kl']:.4f} | {exact} |",
                  flush=True)
            records.append({"case": name, "start": label, "steps": step, "seconds": seconds, "edges": r["edges"],
                            "kl": r["kl"], "exact": r["exact"], "total_steps": len(r["losses"])})
        if args.json:
            args.json.write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
