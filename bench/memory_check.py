"""The memory estimator against measurement on the CPU: small Llama configs, one pruning step each, and the
"small" size in every registered family.

    python bench/memory_check.py            # prints a table; --json PATH writes it
    python bench/memory_check.py --families # one row per registered family (small, batch 4, checkpointing)

Measured: the model's weights plus the peak bytes torch's CPU allocator held during `prune` (two steps, the
precomputations included), read from torch.profiler's memory events (`epverify.scale.memory.measure_cpu_peak`): the CPU
counterpart of torch.cuda.max_memory_allocated. Predicted: `epverify.scale.memory.estimate` for the same shape.
Batches as bench/scale.py's (Boolean Expressions-shaped, 64-72 tokens), float32, one thread; a batch shown as
16/4 runs 16 rows per step in micro-batches of 4 (`PruneConfig.micro_batch_size`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from scale import boolean_shaped_batch  # noqa: E402

from epverify import PruneConfig, prune  # noqa: E402
from epverify.adapters import wrap  # noqa: E402
from epverify.adapters.registry import Sizes, families, family  # noqa: E402
from epverify.scale import memory  # noqa: E402

CONFIGS = {  # (layers, heads, KV heads, d_model, d_mlp, vocab); head_dim = d_model / heads
    "tiny": (4, 4, 4, 64, 172, 512),
    "small": (4, 8, 8, 256, 688, 2048),
    "gqa": (6, 6, 2, 192, 512, 1024),
    "deep": (12, 8, 8, 128, 344, 1024),
    "wide-mlp": (2, 4, 4, 256, 2048, 4096),
}


def sizes(name: str) -> Sizes:
    layers, heads, kv, d, d_mlp, vocab = CONFIGS[name]
    return Sizes(n_layers=layers, n_heads=heads, n_kv_heads=kv, head_dim=d // heads, d_model=d, d_mlp=d_mlp,
                 vocab=vocab)


def measure(name: str, batch: int, checkpoint: bool, micro: int = 0, family_name: str = "llama") -> dict:
    """One row: `micro` rows per pass (`PruneConfig.micro_batch_size`; 0: the whole batch at once), the model a
    random one of the registered family `family_name` at the sizes `name`."""
    torch.manual_seed(0)
    model = family(family_name).tiny_model(sizes(name)).requires_grad_(False)
    config = model.config
    masked = wrap(model)
    data = boolean_shaped_batch(config.vocab_size, batch, 0, "cpu")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    prune_config = PruneConfig(target_sparsity=0.5, steps=2, warmup_steps=2, batch_size=batch,
                               checkpoint_layers=checkpoint, micro_batch_size=micro)
    _, peak = memory.measure_cpu_peak(lambda: prune(masked.adapter, data, prune_config))
    predicted = memory.estimate(config, batch, data.input_ids.shape[1], torch.float32, checkpoint=checkpoint,
                                micro_batch=micro)
    measured = weights + peak
    return {"config": name, "family": family_name, "batch": batch, "micro_batch": micro, "checkpoint": checkpoint,
            "measured_mib": round(measured / 2**20, 1), "predicted_mib": round(predicted.total / 2**20, 1),
            "ratio": round(predicted.total / measured, 3)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the rows as JSON")
    parser.add_argument("--families", action="store_true", help="one row per registered family instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    if args.families:
        print(f"{'family':12s} {'measured MiB':>12s} {'predicted MiB':>13s} {'predicted/measured':>18s}")
        for name in families():
            r = measure("small", 4, True, family_name=name)
            rows.append(r)
            print(f"{name:12s} {r['measured_mib']:12.1f} {r['predicted_mib']:13.1f} {r['ratio']:18.2f}", flush=True)
        _write(args.json, rows)
        return rows
    print(f"{'config':9s} {'batch':>5s} {'checkpoint':>10s} {'measured MiB':>12s} {'predicted MiB':>13s} "
          f"{'predicted/measured':>18s}")
    for name in CONFIGS:
        for checkpoint in (True, False):
            for batch, micro in ((4, 0), (16, 0), (16, 4)):
                r = measure(name, batch, checkpoint, micro)
                rows.append(r)
                shown = f"{batch}/{micro}" if micro else str(batch)
                print(f"{name:9s} {shown:>5s} {str(checkpoint):>10s} {r['measured_mib']:12.1f} "
                      f"{r['predicted_mib']:13.1f} {r['ratio']:18.2f}", flush=True)
    _write(args.json, rows)
    return rows


def _write(path: str | None, rows: list[dict]) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
