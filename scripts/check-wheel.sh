#!/usr/bin/env bash
# A plain install works: build bioknow's wheel, install it (not editable) into a fresh
# virtual environment outside the repository, and generate, train and evaluate from it.
#   bash scripts/check-wheel.sh [TORCH]     # TORCH: the torch requirement (default torch==2.13.0)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
torch=${1:-torch==2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q "$torch"
"$work/venv/bin/python" -m pip wheel -q --no-deps -w "$work/wheels" "$repo"
"$work/venv/bin/python" -m pip install -q "$work"/wheels/bioknow-*.whl
cd "$work"  # away from the repository, so only the installed package is importable
bk="$work/venv/bin/bioknow"
"$bk" generate bioS-simple --n 30 --out data >/dev/null
"$bk" train --data data --model gpt2-1-1 --exposures 2 --batch 1 --out run >/dev/null
"$bk" eval run --json | "$work/venv/bin/python" -c \
  'import json, sys; r = json.load(sys.stdin); assert r["people"] == 30 and r["bits_max"] > 0; print("wheel: generate, train and eval work from a plain install; R", round(r["R"], 4))'
