#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md in one go, for a short loan of one GPU (about 6 minutes on an H200).
# Each part writes its JSON to $OUT as soon as it ends, so a cut run still reports what it reached:
#   1. `epverify prune` through the command line on a saved small Llama, the device chosen by --device auto
#   2. the Hugging Face step ratios on the GPU (bench/step.py)
#   3. the CodeLlama-13B-shaped step at 32 rows, in one pass and in micro-batches of 8 (peak memory vs the estimate)
#   4. the CodeLlama-34B-shaped step (48 layers, 64 heads, 8 KV heads) at 32 rows in micro-batches of 4
#   5. seconds per step over 300 steps of a GPT-2-small-shaped run at batch 32 (x 3,000: a paper-length run)
#   6. warm start (bench/init_from.py) against the cold start on the GPT-2-small shape
#     OUT=/tmp/gpu bash bench/gpu_check.sh
set -u
OUT=${OUT:-/tmp/epverify-gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$OUT/gpu.txt"

# 1. the CLI on a saved checkpoint, no launcher: it must say it runs on cuda
$PY - "$OUT/small_llama" <<'PYEOF'
import sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from epverify.tasks import get_task
from epverify.tasks.tokenizer import build_word_tokenizer
tok = build_word_tokenizer(get_task("boolean-expressions").vocabulary(), add_bos=True)
torch.manual_seed(0)
LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                             num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256,
                             dtype="bfloat16")).to(torch.bfloat16).save_pretrained(sys.argv[1])
tok.save_pretrained(sys.argv[1])
PYEOF
start=$SECONDS
timeout 120 epverify prune --model "$OUT/small_llama" --task boolean-expressions --steps 300 --batch-size 32 \
    --quiet --no-draw --out "$OUT/cli_prune" > "$OUT/cli_prune.log" 2>&1
echo "{\"rc\": $?, \"wall_s\": $((SECONDS - start))}" | tee "$OUT/cli_prune.json"
grep -i "cuda\|device\|circuit:" "$OUT/cli_prune.log" | head -5

# 2. step ratios
timeout 150 $PY bench/step.py --device cuda --repeats 7 --json "$OUT/step_gpu.json" 2>&1 | tail -8
# 3. 13B shape, one pass and micro-batches
timeout 150 $PY bench/scale.py --config codellama-13b --random-weights --batch-size 32 --steps 4 \
    --json "$OUT/codellama13b.json" 2>&1 | tail -20
timeout 150 $PY bench/scale.py --config codellama-13b --random-weights --batch-size 32 --steps 4 \
    --micro-batch-size 8 --json "$OUT/codellama13b_micro8.json" 2>&1 | tail -20
# 4. 34B shape in micro-batches
timeout 200 $PY bench/scale.py --config codellama-34b --random-weights --batch-size 32 --steps 3 \
    --micro-batch-size 4 --json "$OUT/codellama34b_micro4.json" 2>&1 | tail -20
# 5. GPT-2 small shape, 300 steps at batch 32, through prune (random weights, Boolean Expressions-shaped rows)
timeout 240 $PY - "$OUT/gpt2_small_300.json" <<'PYEOF'
import json, sys, time
import torch
from transformers import GPT2Config, GPT2LMHeadModel
sys.path.insert(0, "bench")
from scale import boolean_shaped_batch
from epverify import PruneConfig, prune, wrap
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_positions=128)).cuda().eval().requires_grad_(False)
data = boolean_shaped_batch(model.config.vocab_size, 32, 0, "cuda")
torch.cuda.synchronize()
start = time.perf_counter()
prune(wrap(model).adapter, data, PruneConfig(steps=300, batch_size=32))
torch.cuda.synchronize()
per_step = (time.perf_counter() - start) / 300
out = {"steps": 300, "batch": 32, "seconds_per_step": round(per_step, 4), "x3000_s": round(per_step * 3000, 1)}
print(json.dumps(out))
json.dump(out, open(sys.argv[1], "w"))
PYEOF
# 6. warm start against the cold start on the GPT-2-small shape (300 steps per run: cold, eap, eap-ig)
timeout 300 $PY bench/init_from.py --cases gpt2-small-random --steps 300 --device cuda \
    --json "$OUT/init_from_gpt2_small.json" 2>&1 | tail -5
