#!/usr/bin/env bash
# GPU checks of the ELSA operator alone, on any CUDA machine (gpu_run.sh runs its own steps):
#   build in place with the CUDA kernels, run tests/ops (CUDA tests included), compute-sanitizer
#   memcheck + racecheck on a small forward+backward, and the CUDA benchmark.
# Logs go to $OUT (default ./.devout). Every step runs even if an earlier one fails; the exit
# status is the number of failed steps.
#   bash dev/gpu/cuda_checks.sh [--no-bench] [--quick-bench]
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# The steps import mmelsa from this checkout (built in place here, not installed).
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-$PWD/.devout}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
BENCH=full
for a in "$@"; do
  case $a in
    --no-bench) BENCH=none ;;
    --quick-bench) BENCH=quick ;;
  esac
done
failed=0
step() {  # step NAME LOG COMMAND...
  local name=$1 log=$2; shift 2
  echo "=== [$(date +%T)] $name"
  "$@" 2>&1 | tee "$OUT/$log"
  local rc=${PIPESTATUS[0]}
  echo "=== [$(date +%T)] $name: rc=$rc"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
  echo "$name rc=$rc" >> "$OUT/summary.txt"
  return 0
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  nvcc --version | tail -1; } 2>&1 | tee "$OUT/env.txt"

step build build.log env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
  $PY setup.py build_ext --inplace
step import import.log $PY -c 'import mmelsa.ops as o; print(o.info()); assert o.info()["with_cuda"]'
step pytest pytest.log timeout 200 $PY -m pytest tests/ops -q -ra -p no:cacheprovider --durations=8
export PYTORCH_NO_CUDA_MEMORY_CACHING=1  # lets memcheck see out-of-bounds accesses in torch buffers
step memcheck sanitizer.log timeout 100 compute-sanitizer --tool memcheck --error-exitcode 1 \
  $PY dev/gpu/elsa_sanitize_case.py
step racecheck racecheck.log timeout 100 compute-sanitizer --tool racecheck --racecheck-report all \
  --error-exitcode 1 $PY dev/gpu/elsa_sanitize_case.py
unset PYTORCH_NO_CUDA_MEMORY_CACHING
case $BENCH in
  full) step bench bench_cuda.md timeout ${BENCH_TIMEOUT:-150} $PY \
      tools/analysis_tools/benchmark_elsa_op.py --device cuda --reps ${BENCH_REPS:-10} ;;
  quick) step bench bench_cuda.md timeout ${BENCH_TIMEOUT:-150} $PY tools/analysis_tools/benchmark_elsa_op.py --device cuda \
      --quick ;;
esac
echo "failed steps: $failed" | tee -a "$OUT/summary.txt"
exit "$failed"
