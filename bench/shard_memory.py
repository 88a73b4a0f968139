"""What FSDP sharding saves per process, measured on the CPU (gloo): weights held and the peak of a pruning step.

    python -m torch.distributed.run --nproc_per_node 2 bench/shard_memory.py

Each process builds the same random Llama (d 512, MLP 4096, 4 layers, vocab 8192: weights dominate), runs two
pruning steps on its share of a global batch of 4 with the weights replicated, then again with the decoder layers
sharded (epverify.scale.distributed.LayerShards: torch FSDP2's fully_shard), and prints, per process: the weights
it holds between steps, the measured peak (weights held + the CPU allocator's peak during `prune`,
`epverify.scale.memory.measure_cpu_peak`), and `epverify.scale.memory.estimate` for the same shape (shards=1 or the
number of processes).
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from scale import boolean_shaped_batch  # noqa: E402

from epverify import PruneConfig, prune  # noqa: E402
from epverify.adapters import wrap  # noqa: E402
from epverify.core.masked import MaskedModel  # noqa: E402
from epverify.scale import distributed, memory  # noqa: E402

SHAPE = dict(hidden_size=512, intermediate_size=4096, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=8, vocab_size=8192, max_position_embeddings=256)
GLOBAL_BATCH = 4


def _local(p: torch.Tensor) -> torch.Tensor:
    """What this process stores of a parameter: its shard for an FSDP DTensor, else all of it."""
    from torch.distributed.tensor import DTensor

    return p.to_local() if isinstance(p, DTensor) else p


def run(parallel: distributed.Parallel, shard: bool) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPE)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    masked = wrap(model)
    if shard:
        shards = distributed.LayerShards(masked.adapter, parallel)
        masked = MaskedModel(distributed.ShardedAdapter(masked.adapter, shards))
    held = sum(_local(p).numel() * p.element_size() for p in model.parameters())  # at rest: this process's shards
    data = boolean_shaped_batch(config.vocab_size, GLOBAL_BATCH, 0, "cpu")
    prune_config = PruneConfig(target_sparsity=0.5, steps=2, warmup_steps=2, batch_size=GLOBAL_BATCH,
                               checkpoint_layers=True)
    _, peak = memory.measure_cpu_peak(lambda: prune(masked.adapter, data, prune_config, parallel=parallel))
    local = len(range(GLOBAL_BATCH)[parallel.rows(GLOBAL_BATCH)])
    predicted = memory.estimate(config, local, data.input_ids.shape[1], torch.float32,
                                shards=parallel.world_size if shard else 1)
    return {"rank": parallel.rank, "processes": parallel.world_size, "sharded": shard,
            "weights_held_mib": round(held / 2**20, 1), "peak_mib": round((held + peak) / 2**20, 1),
            "predicted_peak_mib": round(predicted.total / 2**20, 1)}


def main() -> None:
    torch.set_num_threads(1)
    parallel = distributed.setup(distributed.LaunchSettings.from_env())
    for shard in (False, True):
        # one write per line: print() writes the text and the newline apart, and the other rank's line can land
        # between them on the shared pipe
        sys.stdout.write(json.dumps(run(parallel, shard)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
