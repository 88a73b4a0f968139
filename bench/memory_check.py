"""The memory estimator against measurement on the CPU: small Llama configs, one pruning step each.

    python bench/memory_check.py            # prints a table; --json PATH writes it

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
from epverify.scale import memory  # noqa: E402

CONFIGS = {
    "tiny": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=512),
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=8, vocab_size=2048),
    "gqa": dict(hidden_size=192, intermediate_size=512, num_hidden_layers=6, num_attention_heads=6,
                num_key_value_heads=2, vocab_size=1024),
    "deep": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=12, num_attention_heads=8,
                 num_key_value_heads=8, vocab_size=1024),
    "wide-mlp": dict(hidden_size=256, intermediate_size=2048, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=4, vocab_size=4096),
}


def measure(name: str, batch: int, checkpoint: bool, micro: int = 0) -> dict:
    """One row: `micro` rows per pass (`PruneConfig.micro_batch_size`; 0: the whole batch at once)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**CONFIGS[name], max_position_embeddings=256)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    masked = wrap(model)
    data = boolean_shaped_batch(config.vocab_size, batch, 0, "cpu")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    prune_config = PruneConfig(target_sparsity=0.5, steps=2, warmup_steps=2, batch_size=batch,
                               checkpoint_layers=checkpoint, micro_batch_size=micro)
    _, peak = memory.measure_cpu_peak(lambda: prune(masked.adapter, data, prune_config))
    predicted = memory.estimate(config, batch, data.input_ids.shape[1], torch.float32, checkpoint=checkpoint,
                                micro_batch=micro)
    measured = weights + peak
    return {"config": name, "batch": batch, "micro_batch": micro, "checkpoint": checkpoint,
            "measured_mib": round(measured / 2**20, 1), "predicted_mib": round(predicted.total / 2**20, 1),
            "ratio": round(predicted.total / measured, 3)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
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
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
