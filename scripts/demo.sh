#!/usr/bin/env bash
# README command 1, the whole story on a small testbed: set up .venv, build the small testbed
# (4 task kinds, a 400-row pool with planted wrong answers, near-duplicates and off-task rows, and
# a small base model pretrained here - cached after the first run), then select 30% of the pool
# with random, se and delift, fine-tune the base model on each subset and on everything with Ray
# Train, evaluate on 200 held-out items, and print the comparison table.
# Extra arguments go to `delift-ray compare` (e.g. --set compare.seeds=3).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
model=$(.venv/bin/python -m delift_ray.testbed.demo --models .cache/testbed --out runs/demo-testbed)
.venv/bin/delift-ray compare --config pipelines/configs/demo.yaml --set model.path="$model" "$@"
