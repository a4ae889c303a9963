#!/usr/bin/env bash
# On a CUDA machine (the device tool's H200): pretrain the testbed base model at the "gpu" scale
# pre-registered in benchmarks/TESTBED.md, then run the acceptance check; everything under $OUT.
#   OUT=runs/gpu-testbed bash benchmarks/gpu_testbed.sh
#   DEVICE=cpu bash benchmarks/gpu_testbed.sh --steps 3    # smoke run, anywhere (~5 min here)
# Extra arguments go to `pretrain`. Needs torch, transformers, tokenizers, pyarrow, numpy, pyyaml
# (no Ray). Python: $PYTHON, else .venv, else python3. The model directory comes back with $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
out=${OUT:-runs/gpu-testbed}
mkdir -p "$out"
start=$(date +%s)
device=${DEVICE:-cuda}
model=$("$python" -m delift_ray.testbed.pretrain --out "$out/models" --scale gpu --device "$device" "$@")
echo "[gpu-testbed] base model: $model ($(($(date +%s) - start)) s)"
"$python" -m delift_ray.testbed.generate --out "$out/all-kinds" --n 1200 --seed 0 >/dev/null
"$python" -m delift_ray.testbed.check --model "$model" --pool "$out/all-kinds/pool.jsonl" \
  --json "$out/check.json" --device "$device" | tee "$out/check.md"
echo "[gpu-testbed] done in $(($(date +%s) - start)) s"
