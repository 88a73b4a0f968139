"""`epverify zoo`: the shipped compiled programs, their sizes and ground-truth edge counts."""

from __future__ import annotations

from .command import Command


def run(settings) -> int:
    from ..tracr import load, names

    print(f"{'program':18s} {'layers':>6s} {'heads':>5s} {'d_model':>7s} {'edges':>6s} {'zero':>5s} "
          f"{'interchange':>11s} {'mean':>5s}  source")
    for name in names():
        m = load(name)
        gt = {a: len(g["edges"]) for a, g in m.ground_truth.items()}
        print(f"{name:18s} {m.n_layers:6d} {m.n_heads:5d} {m.d_model:7d} {m.total_edges:6d} {gt.get('zero', 0):5d} "
              f"{gt.get('interchange', 0):11d} {gt.get('mean', 0):5d}  {m.source}")
    return 0


COMMAND = Command("zoo", "list the shipped Tracr programs and their ground-truth sizes",
                  "List the shipped compiled programs: size, total edges, and ground-truth edges per ablation.", (),
                  run)
