#!/usr/bin/env bash
# GPU check of utility scoring (issue 13 part 6): Qwen2-0.5B and -1.5B shapes loaded in bf16, a
# correctness gate that can fail, then pairs/s, tokens/s, fraction of bf16 peak, peak memory.
#   bash benchmarks/gpu_check.sh            # on a CUDA machine, about 3 minutes on an H200
#   bash benchmarks/gpu_check.sh --smoke    # a tiny Qwen2 on the CPU, anywhere
# Peak FLOP/s: $PEAK_TFLOPS if set, else a table by device name. Python: $PYTHON, else .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" benchmarks/gpu_check.py "$@"
