#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md in one go, for a short loan of one GPU (about 5 minutes on an H100):
# the Hugging Face step ratios on the GPU, then the CodeLlama-13B-shaped pruning step. Figures go to $OUT.
#     OUT=/tmp/gpu bash bench/gpu_check.sh
set -u
OUT=${OUT:-/tmp/epverify-gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
timeout 150 $PY bench/step.py --device cuda --repeats 7 --json "$OUT/step_gpu.json" 2>&1 | tail -8
timeout 300 $PY bench/scale.py --config codellama-13b --random-weights --batch-size 32 --steps 4 \
    --json "$OUT/codellama13b.json" 2>&1 | tail -40
