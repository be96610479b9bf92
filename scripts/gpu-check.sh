#!/usr/bin/env bash
# The GPU path, proven in one command (under 10 minutes on one H200 or H100):
#   bash scripts/gpu-check.sh [--smoke] [OUT]        # OUT default: out/gpu-check
# (a) the CUDA tests, (b) bioknow's training step beside a transformers loop of the same
# shape (tokens/s, ratio, MFU), (c) evaluation throughput, (d) the small Figure 1(a):
# bioS N = 10K at 1000 exposures, four models packed on the GPU, then plot and fit.
# Each part has its own time cap and writes what it has even when a later one runs out
# of time. OUT receives eight files: summary.txt (how each part ended, and its figures),
# train-bench.json, eval-bench.json, fig1-small.csv, fig1-small.png, fig1-fit.json,
# cuda-tests.xml and logs.tar.gz (every log); the runs themselves stay in a work folder.
# --smoke rehearses every part on the CPU (tiny N, few steps) so the first GPU call
# cannot die on a typo.
set -uo pipefail
cd "$(dirname "$0")/.."
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
out=$(mkdir -p "${1:-out/gpu-check}" && cd "${1:-out/gpu-check}" && pwd)
work=$(mktemp -d)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 BIOKNOW_PROGRESS_SECONDS=15
py=${PYTHON:-python3}
summary="$out/summary.txt"
: >"$summary"

collect() {  # the eight files of OUT, whatever happened before
  cp "$work/fig1/runs.csv" "$out/fig1-small.csv" 2>/dev/null
  cp "$work/fig1/fit.json" "$out/fig1-fit.json" 2>/dev/null
  cp "$work/fig1-small.png" "$work/train-bench.json" "$work/eval-bench.json" \
    "$work/cuda-tests.xml" "$out/" 2>/dev/null
  (cd "$work" && tar -czf "$out/logs.tar.gz" $(ls -d ./*.log fig1/logs 2>/dev/null))
  rm -rf "$work"
}
trap collect EXIT

# part NAME SECONDS COMMAND...: run with a time cap, logged to NAME.log; note how it ended
part() {
  local name=$1 cap=$2 start=$SECONDS status
  shift 2
  echo "== $name (at most ${cap}s): $*" >>"$summary"
  timeout --signal=TERM --kill-after=20 "$cap" "$@" >"$work/$name.log" 2>&1
  status=$?
  echo "   exit $status after $((SECONDS - start))s$([ $status = 124 ] && echo ', time cap')" \
    >>"$summary"
}

if [ $smoke = 1 ]; then
  device=cpu vocab=128 per_gpu=1
  models=(gpt2-1-1)
  bench=(--rounds 1 --steps 1 --warmup 1 --variants bf16 --baseline)
  evaluation=(--model gpt2-1-1 --n 200 --batch 64 --device cpu --compile)
  fig1='{n: 100, exposures: 2, models: [gpt2-1-1, gpt2-2-1], device: cpu}'
  caps=(300 120 300 300)  # generous: a loaded CPU compiles slowly
else
  device=cuda vocab=4096 per_gpu=4
  models=(gpt2-1-1 gpt2-2-2 gpt2-4-4 gpt2-12-12)
  bench=(--rounds 5 --steps 10 --warmup 5 --variants bf16+compile bf16+cudagraphs --baseline)
  evaluation=(--model gpt2-6-6 --n 100000 --batch 2048 --device cuda --compile)
  fig1='{n: 10000, exposures: 1000, models: [gpt2-1-1, gpt2-2-1, gpt2-4-1, gpt2-2-2], device: cuda}'
  caps=(90 150 45 330)
fi
"$py" -c "import torch; c = torch.cuda.is_available(); print('torch', torch.__version__,
          torch.cuda.get_device_name() if c else 'no CUDA')" >>"$summary" 2>&1

# (a) CUDA tests: bf16 steps fall in loss, eval on CUDA = on the CPU, export, NCCL DDP
part cuda-tests "${caps[0]}" "$py" -m pytest -m cuda -p no:cacheprovider -rs tests/test_cuda.py \
  --junitxml="$work/cuda-tests.xml"
tail -n 3 "$work/cuda-tests.log" | sed 's/^/   /' >>"$summary"

# (b) training speed beside transformers, each model at a batch that fills the device
for m in "${models[@]}"; do
  case $m in gpt2-12-12) b=16 ;; gpt2-4-4) b=64 ;; *) b=128 ;; esac
  [ $smoke = 1 ] && b=1
  part "bench-$m" "$((caps[1] / ${#models[@]}))" "$py" benchmarks/train.py --models "$m" \
    --device $device --batch $b --vocab $vocab "${bench[@]}" --out "$work/bench-$m.json"
  grep -v '^{' "$work/bench-$m.log" | tail -n 5 | sed 's/^/   /' >>"$summary"
done
"$py" -c 'import json, sys, pathlib; w = pathlib.Path(sys.argv[1]); runs = [json.loads(p.read_text())
for p in sorted(w.glob("bench-*.json"))]; (w / "train-bench.json").write_text(json.dumps(runs, indent=2))' "$work"

# (c) evaluation throughput (people per minute)
part eval-bench "${caps[2]}" "$py" benchmarks/eval.py "${evaluation[@]}" --out "$work/eval-bench.json"
grep -v '^{' "$work/eval-bench.log" | tail -n 1 | sed 's/^/   /' >>"$summary"

# (d) the small Figure 1(a): bioS x 1000 exposures, the paper's recipe (row N = 10K:
# batch 24, lr 1e-3, wd 0.02), runs packed on the GPU; then its figure and fits
"$py" -c 'import sys, yaml; o = yaml.safe_load(sys.argv[2]); yaml.safe_dump({
  "datasets": [{"variant": "bioS", "n": o["n"], "seed": 0}], "models": o["models"],
  "exposures": o["exposures"], "recipe": {"batch": 24, "lr": 1e-3, "wd": 0.02},
  "train": {"device": o["device"]}, "quantize": ["none"]}, open(sys.argv[1], "w"))' \
  "$work/fig1.yaml" "$fig1"
part fig1-sweep "${caps[3]}" "$py" -m bioknow sweep "$work/fig1.yaml" --out "$work/fig1" \
  --device $device --per-gpu $per_gpu --cpu-slots 2
part fig1-plot 60 "$py" -m bioknow plot "$work/fig1" --out "$work/fig1-small.png"
part fig1-fit 60 "$py" -m bioknow fit "$work/fig1"
grep -E '^  .*R [0-9.-]+ of Rmax' "$work/fig1-sweep.log" | sed 's/^/   /' >>"$summary"
echo "outputs in $out" >>"$summary"
cat "$summary"
