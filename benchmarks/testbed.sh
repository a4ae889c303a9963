#!/usr/bin/env bash
# The testbed benchmark (issue 4, part 5; design and results in benchmarks/TESTBED.md):
# pretrain the base model (cached), generate the pool and test set, run the acceptance check,
# choose the fine-tuning recipe on the full pool (delift_ray.testbed.recipe; EPOCHS=3 fixes it
# with one full-pool run), compare every method of pipelines/configs/testbed.yaml at budgets
# 0.1/0.3/0.5, write the report.
#   bash benchmarks/testbed.sh                  # SCALE=packed-long OUT=runs/testbed
#   SCALE=packed bash benchmarks/testbed.sh --set compare.seeds=2   # extra args go to compare
# Stops after the check if fewer than 10 kinds are accepted; FORCE=1 then compares on all 13 kinds
# anyway (a run on a testbed that is NOT accepted: report it as such).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
SCALE=${SCALE:-packed-long}
OUT=${OUT:-runs/testbed}
N=${N:-1200}
py=.venv/bin/python
# MODEL=<dir>: a base model pretrained elsewhere instead of SCALE's
model=${MODEL:-$($py -m delift_ray.testbed.pretrain --out .cache/testbed --scale "$SCALE")}
echo "[testbed] base model: $model"
$py -m delift_ray.testbed.generate --out "$OUT/all-kinds" --n "$N" --seed 0 >/dev/null
$py -m delift_ray.testbed.check --model "$model" --pool "$OUT/all-kinds/pool.jsonl" \
  --json "$OUT/check.json" | tee "$OUT/check.md"
kinds=$(sed -n 's/^accepted kinds: //p' "$OUT/check.md")
count=$(tr ',' '\n' <<<"$kinds" | grep -c '^[a-z]' || true)
kind_args=(--kinds "$kinds")
if [ "$count" -lt 10 ]; then
  if [ "${FORCE:-0}" != 1 ]; then
    echo "[testbed] only $count kinds accepted (need 10): testbed not accepted, no comparison" >&2
    exit 2
  fi
  echo "[testbed] only $count kinds accepted: NOT accepted; FORCE=1: comparing on all kinds" >&2
  kind_args=()
fi
$py -m delift_ray.testbed.generate --out "$OUT" --n "$N" --seed 0 "${kind_args[@]}"
data=(--set model.path="$model" --set data.path="$OUT/pool.jsonl"
  --set eval.test.path="$OUT/test.jsonl")
# the fine-tuning recipe by the rule in benchmarks/TESTBED.md, judged on the full pool only
epochs=$($py -m delift_ray.testbed.recipe --config pipelines/configs/testbed.yaml "${data[@]}" \
  --out "$OUT/recipe" --epochs "${EPOCHS:-3,10,20}" --threshold 0.3 | tail -n 1)
echo "[testbed] recipe: $epochs epochs ($OUT/recipe/recipe.json)"
.venv/bin/delift-ray compare --config pipelines/configs/testbed.yaml "${data[@]}" \
  --set train.epochs="$epochs" --set output_dir="$OUT/compare" "$@"
$py -m delift_ray.testbed.report --compare "$OUT/compare" --pool "$OUT/pool.jsonl" \
  --test "$OUT/test.jsonl" --out "$OUT/report.md"
