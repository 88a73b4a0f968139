"""A pruning run at a real model's shape with random weights: peak memory, seconds per step, tokens per second.

    python bench/scale.py --config codellama-13b --random-weights          # on a GPU: the headline figure
    python bench/scale.py --config tiny-llama --random-weights --steps 3   # on the CPU (tested)

The model is built directly on the device in bf16 (GPU) or float32 (CPU) from its config, with random weights;
nothing is downloaded. Batches are Boolean Expressions-shaped: sequences of 64-72 tokens (padded to the longest),
the loss at the last real token, corrupted partners of the same length. Each step is a full trainer step (the
corrupted run under no_grad, the masked forward with per-layer checkpointing, the backward into the masks, the
optimizer steps). The estimator's prediction (`epverify.scale.memory.estimate`) is printed beside the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from epverify import PruneConfig, PruneData, prune  # noqa: E402
from epverify.adapters import wrap  # noqa: E402
from epverify.scale import memory  # noqa: E402

CONFIGS = {
    # CodeLlama-13B: 40 layers, 40 heads, 40 KV heads, d 5120, MLP 13824, vocab 32016
    "codellama-13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                          num_key_value_heads=40, vocab_size=32016, rope_theta=1_000_000.0,
                          max_position_embeddings=16384),
    "codellama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32016, rope_theta=1_000_000.0,
                         max_position_embeddings=16384),
    # CodeLlama-34B: 48 layers, 64 heads, 8 KV heads (grouped), d 8192, MLP 22016, vocab 32000
    "codellama-34b": dict(hidden_size=8192, intermediate_size=22016, num_hidden_layers=48, num_attention_heads=64,
                          num_key_value_heads=8, vocab_size=32000, rope_theta=1_000_000.0,
                          max_position_embeddings=16384),
    "tiny-llama": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=512, max_position_embeddings=256),
}


def build(name: str, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**CONFIGS[name])
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


def boolean_shaped_batch(vocab: int, batch: int, seed: int, device) -> PruneData:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(64, 73, (batch,), generator=gen)
    seq = int(lengths.max())
    ids = torch.randint(3, vocab, (batch, seq), generator=gen)
    corrupted = ids.clone()
    flip = torch.rand(batch, seq, generator=gen) < 0.1
    corrupted[flip] = torch.randint(3, vocab, (int(flip.sum()),), generator=gen)
    mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    ids, corrupted = ids * mask, corrupted * mask
    loss_mask = torch.zeros(batch, seq, dtype=torch.bool)
    loss_mask[torch.arange(batch), lengths - 1] = True
    return PruneData(ids.to(device), mask.to(device), loss_mask.to(device), corrupted.to(device))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="codellama-13b", choices=list(CONFIGS))
    parser.add_argument("--random-weights", action="store_true", help="required: build the model from its config")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step (x ~68 tokens)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--micro-batch-size", type=int, default=0,
                        help="rows per pass (PruneConfig.micro_batch_size; 0: the whole batch at once)")
    parser.add_argument("--memory-cap-gib", type=float,
                        help="GPU: refuse allocations beyond this many GiB (e.g. 80 on a larger card)")
    parser.add_argument("--json", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if not args.random_weights:
        parser.error("only --random-weights is supported here (no downloads); pass it explicitly")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    if device.type == "cuda" and args.memory_cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total))
    start = time.perf_counter()
    model = build(args.config, device, dtype)
    masked = wrap(model)
    build_s = time.perf_counter() - start
    data = boolean_shaped_batch(model.config.vocab_size, args.batch_size, 0, device)
    tokens = int(data.attention_mask.sum())
    seq = data.input_ids.shape[1]
    predicted = memory.estimate(model.config, args.batch_size, seq, dtype, checkpoint=True,
                                micro_batch=args.micro_batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    step_times: list[float] = []
    last = [time.perf_counter()]

    def progress(record):
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now
        print(f"step {record['step']}: {step_times[-1]:.2f} s, kl {record['faithfulness']:.4f}", flush=True)

    config = PruneConfig(target_sparsity=0.5, steps=args.steps, warmup_steps=args.steps, batch_size=args.batch_size,
                         checkpoint_layers=True, micro_batch_size=args.micro_batch_size)
    last[0] = time.perf_counter()
    prune(masked.adapter, data, config, progress=progress)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    per_step = sorted(step_times[1:] or step_times)[len(step_times[1:] or step_times) // 2]
    result = {
        "config": args.config,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "dtype": str(dtype),
        "edges": masked.num_edges,
        "batch": [args.batch_size, seq],
        "micro_batch": args.micro_batch_size,
        "tokens_per_step": tokens,
        "build_s": round(build_s, 1),
        "seconds_per_step_median": round(per_step, 3),
        "tokens_per_second": round(tokens / per_step, 1),
        "peak_memory_gib": None if peak is None else round(peak / 2**30, 2),
        "memory_cap_gib": args.memory_cap_gib,
        "predicted_peak_gib": round(predicted.total / 2**30, 2),
        "predicted": {k: round(v / 2**30, 3) for k, v in predicted.parts.items()},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
