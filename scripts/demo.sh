#!/usr/bin/env bash
# README command 1: set up .venv, build the tiny demo model (cached), select 30% of the demo pool.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
.venv/bin/delift-ray demo-model --out .cache/demo-model --data pipelines/data/demo_pool.jsonl
.venv/bin/delift-ray select --config pipelines/configs/instruction.yaml --set budget=0.3 "$@"
