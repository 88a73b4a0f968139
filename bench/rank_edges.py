"""Prune one shipped trained model as `epverify recover` does and print every edge by its final log-alpha, the
card's circuit marked with T: where the ranking puts edges that are not in the circuit.

    python bench/rank_edges.py count_gpt2
    python bench/rank_edges.py count_parity_llama --set log_alpha_bound=10 --ablation zero
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from epverify.eval.compare import roc_auc, truth_mask  # noqa: E402
from epverify.train import prune  # noqa: E402
from epverify.trained.card import ROOT  # noqa: E402
from epverify.trained.recover import load, recovery_config  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a directory under trained_models/, by name")
    parser.add_argument("--ablation", default="interchange", choices=["interchange", "zero"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a numeric field of the recovery config (experiments only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    masked, card = load(ROOT / args.model)
    config = recovery_config(args.ablation, args.seed)
    for item in args.set:
        key, _, value = item.partition("=")
        config = replace(config, **{key: type(getattr(config, key))(value)})
    torch.manual_seed(args.seed)
    log_alpha = prune(masked.adapter, card.prune_data(), config).edge_log_alpha.detach()
    truth = set(card.truth(args.ablation))
    graph = masked.graph
    for i in sorted(range(graph.num_edges), key=lambda i: -float(log_alpha[i])):
        writer, reader = graph.edges[i]
        print(f"{float(log_alpha[i]):9.3f} {'T' if (writer, reader) in truth else ' '} {writer} > {reader}")
    print(f"ROC AUC {roc_auc(log_alpha.double(), truth_mask(graph, truth)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
