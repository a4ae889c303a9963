#!/usr/bin/env bash
# The testbed benchmark (issue 14; design, pre-registration and results in benchmarks/TESTBED.md):
# pretrain the base model (cached), run the acceptance check of its utilities, generate the
# discriminating pool (POOL_ARGS) with its test and validation sets, choose each budget's
# fine-tuning recipe on the validation set with random subsets only (delift_ray.testbed.recipe),
# compare every method of pipelines/configs/testbed.yaml under those recipes, write the report.
#   bash benchmarks/testbed.sh                                   # OUT=runs/testbed
#   bash benchmarks/testbed.sh --set compare.budgets=0.3         # extra args go to compare
#   RECIPE_ARGS="--set compare.budgets=0.3" bash benchmarks/testbed.sh ...  # and to the rule
# Stops after the check if fewer than 10 kinds are accepted.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
SCALE=${SCALE:-packed-long}
OUT=${OUT:-runs/testbed}
SEED=${SEED:-0}  # the reporting seed; develop on others
# session 9's discriminating pool (TESTBED.md): 600 rows, imbalance 10, 20% wrong, 10% off-task,
# the kinds this base model cannot produce at the common end
KINDS=${KINDS:-add,swap_words,concat,remove_vowels,repeat,reverse,uppercase,first_letter,sort_numbers,count_letters,last_letter,max_number,min_number}
POOL_ARGS=${POOL_ARGS:---n 600 --imbalance 10 --wrong 0.2 --off-task 0.1}
CANDIDATES=${CANDIDATES:-5@0.001,10@0.001,20@0.001}
py=.venv/bin/python
# MODEL=<dir>: a base model pretrained elsewhere instead of SCALE's
model=${MODEL:-$($py -m delift_ray.testbed.pretrain --out .cache/testbed --scale "$SCALE")}
echo "[testbed] base model: $model"
$py -m delift_ray.testbed.generate --out "$OUT/all-kinds" --n 1200 --seed 0 >/dev/null
$py -m delift_ray.testbed.check --model "$model" --pool "$OUT/all-kinds/pool.jsonl" \
  --json "$OUT/check.json" | tee "$OUT/check.md"
kinds=$(sed -n 's/^accepted kinds: //p' "$OUT/check.md")
count=$(tr ',' '\n' <<<"$kinds" | grep -c '^[a-z]' || true)
if [ "$count" -lt 10 ]; then
  echo "[testbed] only $count kinds accepted (need 10): testbed not accepted, no comparison" >&2
  exit 2
fi
# shellcheck disable=SC2086  # POOL_ARGS is a list of arguments
$py -m delift_ray.testbed.generate --out "$OUT" --seed "$SEED" --kinds "$KINDS" $POOL_ARGS
data=(--set model.path="$model" --set data.path="$OUT/pool.jsonl")
# each budget's recipe by the rule in benchmarks/TESTBED.md: random subsets, validation set
# shellcheck disable=SC2086  # RECIPE_ARGS is a list of arguments
mapfile -t recipe < <($py -m delift_ray.testbed.recipe --config pipelines/configs/testbed.yaml \
  "${data[@]}" ${RECIPE_ARGS:-} --validation "$OUT/validation.jsonl" --out "$OUT/recipe" \
  --candidates "$CANDIDATES" | tail -n 2)
echo "[testbed] recipe: epochs ${recipe[0]}, lr ${recipe[1]} ($OUT/recipe/recipe.json)"
.venv/bin/delift-ray compare --config pipelines/configs/testbed.yaml "${data[@]}" \
  --set eval.test.path="$OUT/test.jsonl" --set compare.epochs_by_budget="${recipe[0]}" \
  --set compare.lr_by_budget="${recipe[1]}" --set output_dir="$OUT/compare" "$@"
$py -m delift_ray.testbed.report --compare "$OUT/compare" --pool "$OUT/pool.jsonl" \
  --test "$OUT/test.jsonl" --out "$OUT/report.md"
