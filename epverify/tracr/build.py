"""Rebuild every shipped compiled model: `python -m epverify.tracr.build [NAME ...]` (deterministic)."""

from __future__ import annotations

import argparse
import time

from .compile import compile_rasp
from .ground_truth import GT_ABLATIONS, ground_truth
from .model import CompiledModel
from .zoo import BY_NAME, ROOT, ZOO, ZooEntry


def compile_entry(entry: ZooEntry) -> CompiledModel:
    """Compile one zoo (or ladder) program with its dataset recipe, no ground truth yet."""
    return compile_rasp(entry.make(), list(entry.vocab), entry.max_seq_len, causal=entry.causal, name=entry.name,
                        source=entry.source, unique=entry.unique, balance=entry.balance)


def build(entry: ZooEntry) -> CompiledModel:
    """Compile one zoo program, attach its dataset recipe and verified ground truth per ablation."""
    model = compile_entry(entry)
    model.ground_truth = {ablation: ground_truth(model, ablation) for ablation in GT_ABLATIONS}
    return model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="programs to rebuild (default: all)")
    args = parser.parse_args(argv)
    entries = [BY_NAME[n] for n in args.names] if args.names else list(ZOO)
    for entry in entries:
        start = time.perf_counter()
        model = build(entry)
        model.save(ROOT / entry.name)
        counts = ", ".join(f"{a} {len(g['edges'])}" for a, g in model.ground_truth.items())
        print(f"{entry.name:18s} {model.total_edges:5d} edges; truth: {counts}  ({time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
