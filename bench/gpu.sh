#!/usr/bin/env bash
# Every GPU check of mlplab in one run that fits a lent GPU's device time (under 9 minutes on an
# H100/H200), writing everything under the folder it is given:
#   1. the test suite's CUDA tests;
#   2. bench/bench.py --device cuda, K = 1, 4, 16, 64, fp32/TF32 and bf16, against plain PyTorch
#      eager and the matmul floor (peak memory per measurement);
#   3. the `seed` suite (the notebook's six models, 3 seeds) at 60 epochs, with its wall time;
#   4. as many top rungs of `best` / `best-fashion` as the remaining time allows (1 seed each).
#
#   bash bench/gpu.sh OUTDIR            # on the GPU machine (fails fast, exit 3, without one)
#   bash bench/gpu.sh --dry-run OUTDIR  # here, on CPU: checks every step's command line
#
# Prepare first, here: `bash bench/gpu_prepare.sh` (wheels the GPU image lacks, the datasets),
# then through the device tool: run(command="bash bench/gpu.sh $OUT", carry=[".gpu-carry"]).
# Results: OUTDIR/summary.json (each step: command, exit code, seconds), OUTDIR/log.txt, the
# bench JSONs, the suites' results CSVs, and OUTDIR/runs.tar.gz (tables/histories, no weights).
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
out=${1:?usage: bench/gpu.sh [--dry-run] OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/log.txt"
: >"$log"
budget=${GPU_BUDGET_S:-520}  # whole script; the device call itself is given 600 s
start=$(date +%s)
py=${PYTHON:-python3}
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 MLPLAB_HOME="$work/home" PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

say() { echo "[gpu.sh $(($(date +%s) - start))s] $*" | tee -a "$log" >&2; }
left() { echo $((budget - ($(date +%s) - start))); }
steps=()

# step NAME SECONDS CMD...: run CMD with a time limit (never past the budget) and record it; in a
# dry run, print the command and run its check instead (set by `check` just before).
check_cmd=""
step() {
  local name=$1 limit=$2; shift 2
  local l; l=$(left)
  [ "$limit" -gt "$l" ] && limit=$l
  if [ "$dry" = 1 ]; then
    say "step $name (limit ${limit}s): $*"
    local t0; t0=$(date +%s)
    if [ -n "$check_cmd" ]; then bash -c "$check_cmd" >>"$log" 2>&1; rc=$?; else rc=0; fi
    steps+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(($(date +%s) - t0)), \"dry_run\": true}")
    [ $rc = 0 ] || say "  check FAILED (rc $rc): $check_cmd"
    check_cmd=""
    return 0
  fi
  if [ "$limit" -lt 20 ]; then
    say "step $name skipped: ${limit}s left"
    steps+=("{\"step\": \"$name\", \"rc\": null, \"seconds\": 0, \"skipped\": true}")
    return 0
  fi
  say "step $name (limit ${limit}s): $*"
  local t0; t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  local s=$(($(date +%s) - t0))
  say "step $name: exit $rc after ${s}s"
  steps+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $s, \"limit\": $limit}")
}

if [ "$dry" = 0 ]; then
  if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>>"$log"; then
    echo "bench/gpu.sh: no CUDA GPU here (torch.cuda.is_available() is False); use --dry-run on CPU" >&2
    exit 3
  fi
  nvidia-smi >>"$log" 2>&1
  if [ -d .gpu-carry/wheels ]; then  # the packages the GPU image lacks (bench/gpu_prepare.sh)
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" \
      .gpu-carry/wheels/*.whl >>"$log" 2>&1 || say "wheel install failed"
    export PYTHONPATH="$PYTHONPATH:$work/site"
  fi
  for d in mnist fashion-mnist; do
    [ -d ".gpu-carry/data/$d" ] && "$py" -m mlplab data fetch "$d" --data-dir ".gpu-carry/data/$d" >>"$log" 2>&1
  done
  dev=cuda
else
  dev=cpu
fi

# 1. CUDA tests (they skip on CPU: the dry run only collects them)
check_cmd="$py -m pytest -q --collect-only tests/test_train.py -k cuda"
step cuda-tests 90 "$py" -m pytest -q -x tests/test_train.py tests/test_layers.py -k "cuda or graph" -p no:cacheprovider

# 2. speed and memory, K = 1..64, fp32 (TF32 matmuls) and bf16
tiny="--epochs 1 --rounds 1 --train-size 256 --groups 1 --runners mlplab,floor --models m1"
check_cmd="$py bench/bench.py --device cpu $tiny --out $work/dry-bench"
step bench-fp32 150 "$py" bench/bench.py --device "$dev" --groups 1,4,16,64 --rounds 2 --epochs 3 \
  --runners mlplab,eager,floor --precision fp32 --out "$out/bench-fp32"
check_cmd="$py bench/bench.py --device cpu $tiny --precision bf16 --out $work/dry-bench"
step bench-bf16 100 "$py" bench/bench.py --device "$dev" --groups 1,16,64 --rounds 2 --epochs 3 \
  --runners mlplab,eager --models m1 --precision bf16 --out "$out/bench-bf16"

# 3. the seed suite at 60 epochs (target: < 20 s on one GPU)
check_cmd="$py -m mlplab summary seed >/dev/null"
step seed-60 150 "$py" -m mlplab run seed --epochs 60 --device "$dev" --out "$work/seed"

# 4. the top rungs of the ladders, one seed each, as long as time is left
check_cmd="$py -m mlplab summary best --only '8 +elastic distortion' --only '6 +label smoothing' >/dev/null"
step best-top 200 "$py" -m mlplab run best --only "8 +elastic distortion" --only "6 +label smoothing" \
  --seeds 1 --device "$dev" --out "$work/best"
check_cmd="$py -m mlplab summary best-fashion --only '7 +affine augmentation' --only '6 +label smoothing' >/dev/null"
step best-fashion-top 200 "$py" -m mlplab run best-fashion --only "7 +affine augmentation" --only "6 +label smoothing" \
  --seeds 1 --device "$dev" --out "$work/best-fashion"

# What comes back: at most 8 files, so tables and histories travel as one archive (no weights).
for s in seed best best-fashion; do
  [ -f "$work/$s/results.csv" ] && cp "$work/$s/results.csv" "$out/results-$s.csv"
done
if [ "$dry" = 0 ]; then
  (cd "$work" && tar czf "$out/runs.tar.gz" --exclude='*.safetensors' --exclude=checkpoints \
     --exclude=home --exclude=site seed best best-fashion 2>/dev/null)
fi
{
  echo "{\"dry_run\": $([ $dry = 1 ] && echo true || echo false), \"seconds\": $(($(date +%s) - start)),"
  echo " \"steps\": [$(IFS=,; echo "${steps[*]}")]}"
} >"$out/summary.json"
rm -rf "$work"
say "done: $out/summary.json"
failed=$(grep -o '"rc": [1-9][0-9]*' "$out/summary.json" | wc -l)
[ "$failed" = 0 ]
