"""The memory estimator's bookkeeping and the scaled-down scale benchmark on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig

from epverify import memory

ROOT = Path(__file__).resolve().parents[1]
CODELLAMA_13B = LlamaConfig(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                            num_key_value_heads=40, vocab_size=32016)


def test_codellama_13b_estimate_parts():
    est = memory.estimate(CODELLAMA_13B, 31, 72, torch.bfloat16, checkpoint=True)
    assert est.total == sum(est.parts.values())
    # 13.0e9 parameters in bf16
    assert abs(est.parts["weights"] / 2 - 13.0e9) / 13.0e9 < 0.02
    # one stack: 1,641 writers x 31 x 72 tokens x 5,120 x 2 bytes
    assert est.parts["delta_stack"] == 1641 * 31 * 72 * 5120 * 2
    # measured on an H200 capped at 80 GiB: 68.3 GiB (docs/benchmarks.md); the estimate is within 25% of it
    assert abs(est.total / 2**30 - 68.27) / 68.27 < 0.25


def test_checkpointing_and_batch_move_the_estimate_the_right_way():
    small = memory.estimate(CODELLAMA_13B, 8, 72, torch.bfloat16, checkpoint=True)
    large = memory.estimate(CODELLAMA_13B, 32, 72, torch.bfloat16, checkpoint=True)
    kept = memory.estimate(CODELLAMA_13B, 32, 72, torch.bfloat16, checkpoint=False)
    assert small.total < large.total < kept.total


def test_scaled_down_scale_bench_runs_on_the_cpu(tmp_path):
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--config", "tiny-llama",
                           "--random-weights", "--steps", "2", "--batch-size", "4", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["tokens_per_step"] >= 4 * 64 and result["seconds_per_step_median"] > 0
