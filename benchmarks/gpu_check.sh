#!/usr/bin/env bash
# GPU check of utility scoring (issue 3): a ~0.5B random bf16 Llama, prefix sharing on and off;
# prints tokens/s, pairs/s, fraction of peak bf16 FLOP/s and peak GPU memory. No downloads.
#   bash benchmarks/gpu_check.sh            # on a CUDA machine, < 5 minutes on an H200
#   bash benchmarks/gpu_check.sh --smoke    # tiny float32 model on the CPU, anywhere
# Peak FLOP/s: $PEAK_TFLOPS if set, else a table by device name. Python: $PYTHON, else .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" benchmarks/gpu_check.py "$@"
