#!/usr/bin/env bash
# The lowest-versions check, by hand (not in CI): every direct dependency of pyproject.toml (with
# the train and dev extras) at its lower bound, resolved by uv, in a throwaway venv, then pytest.
# torch stays at the CPU build 2.13.0 (the only torch installable here without CUDA wheels), so
# its lower bound is not exercised. Needs uv on PATH (`pip install uv`, into any venv).
#
#   ./requirements/lowest.sh                       # the suites that exercise the bounds
#   ./requirements/lowest.sh tests/finetune -x     # or any pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
FIND_LINKS=${FIND_LINKS:-/opt/wheels}  # where the torch 2.13.0+cpu wheel lies
VENV=${LOWEST_VENV:-/tmp/delift-lowest}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "torch==2.13.0+cpu" >"$work/torch.txt"
uv pip compile pyproject.toml --extra train --extra dev --resolution lowest-direct \
  --constraint "$work/torch.txt" --python-version 3.11 --find-links "$FIND_LINKS" \
  --no-header --no-annotate --quiet --output-file "$work/lowest.txt"
rm -rf "$VENV"
uv venv --quiet --python 3.11 "$VENV"
VIRTUAL_ENV=$VENV uv pip install --quiet -r "$work/lowest.txt" --find-links "$FIND_LINKS"
VIRTUAL_ENV=$VENV uv pip install --quiet --no-deps -e .
echo "[lowest] direct dependencies at their lower bounds:"
"$VENV/bin/python" - "$work/lowest.txt" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"].values()
wanted = project["dependencies"] + [r for extra in extras for r in extra]
names = {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", r)[0]).lower() for r in wanted}
for line in open(sys.argv[1]):
    name = line.split("==")[0].strip()
    if "==" in line and re.sub(r"[-_.]+", "-", name).lower() in names:
        print("  " + line.strip())
EOF
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.1 TOKENIZERS_PARALLELISM=false
if [ $# -eq 0 ]; then
  set -- tests/config tests/data tests/models tests/scoring tests/selection tests/distributed \
    tests/finetune
fi
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
