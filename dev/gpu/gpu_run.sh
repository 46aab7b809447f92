#!/usr/bin/env bash
# The one command for a GPU machine without network access: about 6 minutes (keep its limit at
# about 7) that prove mmelsa's CUDA path correct and measure it, with nothing to compile there.
#
#   bash dev/gpu/gpu_run.sh              # on the GPU machine; .whl/ (build_carry.sh) beside it
#   bash dev/gpu/gpu_run.sh --dry-run    # here, without a GPU: the whole call rehearsed (below)
#
# Needs .whl/ from dev/gpu/build_carry.sh in the repository root (what travels: the working
# tree and .whl/, under 64 MiB together): the pure-Python wheels, the mmcv 2.1.0 wheel with its
# CUDA ops and mmelsa's CUDA extension, both built for Python 3.12 / torch 2.11.0+cu130 / sm_90.
#
# The steps, in this order, so that a run cut short still returns the most valuable part:
#   0. set-up (about 30 s): Python, torch and CUDA of this machine against .whl/BUILT_FOR.txt;
#      the carried wheels (install_carry.sh); mmelsa's prebuilt extension, or, when the versions
#      differ or csrc/ changed since the build, mmelsa built here (about 1.5 min); the mmcv
#      wheel, only when the versions match (otherwise every step that needs mmcv is skipped,
#      with the reason); the imports of everything. A mismatch never stops the run.
#   1. correctness: `python -m mmelsa.ops.check --require-cuda`; then, while compute-sanitizer
#      memcheck and racecheck run a small forward + backward beside them (capped at 60 s each):
#      pytest tests/ops -m cuda, ELSA-Swin-T on CUDA against the float64 CPU reference with AMP
#      and bitwise reruns (elsa_swin_cuda_check.py), pytest tests/models -m cuda [mmcv]
#   2. the operator: tiled against generic kernels of the same build (--compare-generic), the
#      operator table at the Swin-T stage shapes against the unfold reference, the floors from
#      the copy bandwidth and FMA rate measured here (gpu_floors.py), tiled against generic on
#      channels-last inputs
#   3. end to end, AMP [mmcv]: ELSA-Swin-T against mmdet's Swin-T, 800x1344 batch 2 with one
#      Mask R-CNN train step each, then 224 batch 64 (benchmark_backbone.py)
#   4. if time is left [mmcv]: the toy Mask R-CNN, 300 iterations with --amp, s/iter
# A step starts only while the budget (GPU_RUN_BUDGET_S, default 390 s) has room, and each is
# bounded by its own limit; every step runs even if an earlier one failed.
#
# What it writes into $OUT (default .devout/):
#   summary.txt   one line per step: rc and seconds, SKIPPED lines with the reason
#   results.md    the tables and verdicts as produced
#   logs.tar.gz   every step's full log (re-packed after each step, so a cut run keeps them)
#
# --dry-run, on a machine without a GPU: a fresh Python 3.12 venv gets stand-ins for the GPU
# image's packages (from PyPI; torch 2.11.0+cu130 linked in from build_carry.sh's venv), the
# travelling files are copied to a scratch folder, and this script runs there as on the GPU
# machine, with dev/gpu/dryrun/ on PYTHONPATH: torch then reports one CUDA device and every
# Python step ends at its first CUDA call (exit status 99, the place and time printed), which
# counts as reached. Installs, imports (mmcv._ext included), argument parsing, configs, files
# and the CPU part of each step are all exercised, timed; a broken carry fails here.
#
# Knobs: PY (python3), CARRY_DIR (.whl), BENCH_REPS (10), GPU_RUN_BUDGET_S (390), TOY_ARGS.
# shellcheck disable=SC2329  # the step_* functions are called by name: "step_$2"
set -uo pipefail  # not -e: a failing step is recorded and the next one runs

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SELF=$ROOT/dev/gpu/gpu_run.sh
cd "$ROOT" || exit 1

if [ "${1:-}" = --dry-run ]; then
  exec bash "$ROOT/dev/gpu/dryrun.sh"
fi

export OUT=${OUT:-$ROOT/.devout}
export PY=${PY:-python3}
export CARRY_DIR=${CARRY_DIR:-$ROOT/.whl}
export BENCH_REPS=${BENCH_REPS:-10}
export TOY_ARGS=${TOY_ARGS:-}
export DRYRUN=${DRYRUN:-0}
export PYTHONUNBUFFERED=1
# tools/*.py and dev/gpu/*.py import mmelsa from this checkout (its extension put in place)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
# torch's extension builder runs `ninja` from PATH: the image has it next to its python3
PATH="$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))' 2>/dev/null):$PATH"
export PATH
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MMELSA_STATE=${MMELSA_STATE:-}

# ----------------------------------------------------------------------------- step bodies
# Each runs in its own bash (`gpu_run.sh __step NAME`) so that `timeout` can bound it.

# Python for the steps after the set-up: in a dry run it stops at the first CUDA call.
run_py() {
  if [ "$DRYRUN" = 1 ]; then
    MMELSA_DRYRUN_STOP_AT_CUDA=1 MMELSA_DRYRUN_STOP_FILE=$LOGS/$STEP.stop \
      PYTHONPATH=$ROOT/dev/gpu/dryrun:$PYTHONPATH "$PY" "$@"
  else
    "$PY" "$@"
  fi
}

versions() {  # the same line as build_carry.sh's torch_tag
  "$PY" -c 'import sys, torch; print("python=%d.%d torch=%s cuda=%s" % (sys.version_info[:2] + (torch.__version__, torch.version.cuda)))'
}

src_hash() {  # as build_carry.sh: what the mmelsa extension is built from
  (cd "$ROOT" && find csrc setup.py -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

step_env() {
  local here built
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
    || echo "(no nvidia-smi)"
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], sys.executable); print("torch", torch.__version__, "cuda", torch.version.cuda)' || return 1
  nvcc --version 2>/dev/null | tail -2 || echo "(no nvcc)"
  for t in ninja compute-sanitizer ncu; do printf '%s: %s\n' "$t" "$(command -v "$t" || echo missing)"; done
  echo "cores $(nproc); $(free -g | awk '/Mem:/{print $2" GiB RAM"}'); disk $(df -h "$ROOT" | awk 'NR==2{print $4}') free"
  here=$(versions)
  built=$(grep -E '^python=' "$CARRY_DIR/BUILT_FOR.txt" 2>/dev/null || echo "(no $CARRY_DIR/BUILT_FOR.txt)")
  echo "this machine:  $here"
  echo "carry built for: $built"
  "$PY" -m pip list --disable-pip-version-check 2>/dev/null > "$LOGS/pip_list.txt"
  if [ "$here" = "$built" ]; then echo match > "$WORK/versions"; else echo mismatch > "$WORK/versions"; fi
}

step_install() { PY=$PY CARRY_DIR=$CARRY_DIR bash "$ROOT/dev/gpu/install_carry.sh"; }

step_mmelsa() {
  local so
  so=$(ls "$CARRY_DIR"/prebuilt/mmelsa/_ext.cpython-*.so 2>/dev/null | head -1)
  if [ "$(cat "$WORK/versions")" = match ] && [ -n "$so" ] \
     && [ "$(cat "$CARRY_DIR/prebuilt/mmelsa/SOURCE_HASH" 2>/dev/null)" = "$(src_hash)" ]; then
    echo "the prebuilt extension matches this machine and csrc/: $(basename "$so")"
    cp "$so" "$ROOT/mmelsa/"
  else
    echo "building mmelsa here: the carry's versions differ from this machine's, or csrc/" \
         "changed since the build, or no prebuilt extension was carried"
    if [ "$DRYRUN" = 1 ]; then  # the rehearsal checks the carry: a stale one is an error
      echo "dry run: not built; rebuild the carry (dev/gpu/build_carry.sh mmelsa manifest)"
      return 1
    fi
    # nvcc on PATH may be a wrapper: prefer the toolkit's folder for CUDA_HOME
    [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ] && export CUDA_HOME=/usr/local/cuda
    FORCE_CUDA=1 MAX_JOBS=$(nproc) "$PY" setup.py -q build_ext --inplace || return 1
  fi
  "$PY" -c 'import mmelsa.ops as o; i = o.info(); print(i); assert i["with_cuda"], "no CUDA kernels"'
}

step_mmcv() {
  local whl=$CARRY_DIR/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl
  if [ "$(cat "$WORK/versions")" != match ]; then
    echo "not installed: the mmcv wheel was built for $(grep -E '^python=' "$CARRY_DIR/BUILT_FOR.txt" 2>/dev/null), this machine has $(versions)"
    return 1
  fi
  [ -f "$whl" ] || { echo "not installed: no $whl was carried"; return 1; }
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --force-reinstall \
    --no-cache-dir "$whl" || return 1
  "$PY" - <<'PY' || return 1
import torch  # noqa: F401
from mmcv.utils import ext_loader
ext = ext_loader.load_ext('_ext', ['nms', 'roi_align_forward', 'get_compiling_cuda_version'])
print('mmcv._ext loaded: compiled with CUDA', ext.get_compiling_cuda_version())
assert ext.get_compiling_cuda_version() != 'not available', 'mmcv built without CUDA'
PY
  : > "$WORK/mmcv_ok"
}

step_imports() {
  local with_mmcv=0
  [ -f "$WORK/mmcv_ok" ] && with_mmcv=1
  WITH_MMCV=$with_mmcv "$PY" - <<'PY'
import importlib, os
names = ['torch', 'mmengine', 'mmelsa', 'mmelsa.ops', 'mmelsa.ops.check', 'mmelsa.models',
         'mmelsa.utils.benchmark', 'pycocotools.coco', 'yapf', 'ftfy']
if os.environ['WITH_MMCV'] == '1':
    names += ['mmcv', 'mmcv.ops', 'mmcv._ext', 'mmdet', 'mmdet.models', 'mmseg',
              'mmseg.models']
for name in names:
    mod = importlib.import_module(name)
    print('  %-24s %s' % (name, getattr(mod, '__version__', '')))
if os.environ['WITH_MMCV'] == '1':
    from mmdet.utils import register_all_modules
    register_all_modules()
    from mmengine.registry import MODELS
    assert MODELS.get('mmdet.ELSASwinTransformer') is not None, 'ELSA-Swin not in mmdet'
    print('  ELSASwinTransformer registered for mmdet')
PY
}

step_mmcv_cuda() {  # one mmcv CUDA op, so that a broken mmcv shows before the timings need it
  run_py - <<'PY'
import torch
import mmcv.ops
b = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.]], device='cuda')
keep = mmcv.ops.nms(b, torch.tensor([0.9, 0.8], device='cuda'), 0.5)[1]
assert keep.tolist() == [0], keep
print('mmcv nms on CUDA: ok')
PY
}

step_ops_check() { run_py -m mmelsa.ops.check --require-cuda; }

sanitize() {  # TOOL: compute-sanitizer on one small forward + backward of every code path
  local args=(--tool "$1" --error-exitcode 1)
  [ "$1" = racecheck ] && args+=(--racecheck-report all)
  # without the caching allocator memcheck sees accesses past torch's buffers
  export PYTORCH_NO_CUDA_MEMORY_CACHING=1
  if [ "$DRYRUN" = 1 ]; then
    echo "(dry run: compute-sanitizer $([ -x "$(command -v compute-sanitizer)" ] && echo found || echo 'not here'); the case runs without it)"
    run_py dev/gpu/elsa_sanitize_case.py
  else
    compute-sanitizer "${args[@]}" "$PY" dev/gpu/elsa_sanitize_case.py
  fi
}
step_memcheck() { sanitize memcheck; }
step_racecheck() { sanitize racecheck; }

step_op_tests() { run_py -m pytest tests/ops -m cuda -q -ra -p no:cacheprovider --durations=8; }

step_model_check() { run_py dev/gpu/elsa_swin_cuda_check.py; }

step_model_tests() { run_py -m pytest tests/models -m cuda -q -ra -p no:cacheprovider; }

step_bench_tiled() {
  run_py tools/analysis_tools/benchmark_elsa_op.py --device cuda --compare-generic \
    --reps "$BENCH_REPS" | tee "$LOGS/bench_tiled.md"
}

step_bench_op() {
  run_py tools/analysis_tools/benchmark_elsa_op.py --device cuda --reps "$BENCH_REPS" \
    | tee "$LOGS/bench_op.md"
}

step_floors() {
  run_py dev/gpu/gpu_floors.py --bench-table "$LOGS/bench_op.md" --json "$LOGS/floors.json"
}

# the layouts ELSAAttention passes: tiled reads them in place, generic copies them to NCHW
step_bench_tiled_cl() {
  run_py tools/analysis_tools/benchmark_elsa_op.py --device cuda --compare-generic \
    --channels-last --cases coco-s1 coco-s2 coco-s3 --dtypes float16 --reps "$BENCH_REPS" \
    | tee "$LOGS/bench_tiled_cl.md"
}

step_backbone_coco() {
  run_py tools/analysis_tools/benchmark_backbone.py --device cuda --batch 2 --size 800 1344 \
    --reps 10 --warmup 3 --detector
}

step_backbone_in1k() {
  run_py tools/analysis_tools/benchmark_backbone.py --device cuda --batch 64 --size 224 224 \
    --reps 10 --warmup 3
}

step_toy() {
  # run_toy.sh: data (seeded), train, test, metrics; --amp on the GPU
  if [ "$DRYRUN" = 1 ]; then  # its Python processes stop at their first CUDA call too
    export MMELSA_DRYRUN_STOP_AT_CUDA=1 MMELSA_DRYRUN_STOP_FILE=$LOGS/$STEP.stop
    export PYTHONPATH=$ROOT/dev/gpu/dryrun:$PYTHONPATH
  fi
  # shellcheck disable=SC2097,SC2098  # the variables are meant for run_toy.sh alone
  PYTHON=$PY TASKS=det WORK_DIR=$WORK/toy DET_TRAIN_ARGS="--amp $TOY_ARGS" \
    bash "$ROOT/tools/run_toy.sh" || return
  unset MMELSA_DRYRUN_STOP_AT_CUDA
  # Time per iteration: mmengine's scalars.json has one line per logged iteration (every 5).
  "$PY" - "$WORK/toy/det" <<'PY'
import glob, json, statistics, sys
# The training run's file is the one with losses (the test run writes one of its own).
rows = max(([r for r in map(json.loads, open(f)) if 'loss' in r and 'time' in r]
            for f in glob.glob(sys.argv[1] + '/*/vis_data/scalars.json')), key=len)
times = [r['time'] for r in rows[len(rows) // 10:]]  # skip the first 10% (warm-up)
data = [r.get('data_time', float('nan')) for r in rows[len(rows) // 10:]]
print('toy det train: %d logged points, median %.4f s/iter (data %.4f s), last iter %d, '
      'memory %s MB' % (len(rows), statistics.median(times), statistics.median(data),
                        rows[-1]['iter'], rows[-1].get('memory', '?')))
PY
}

if [ "${1:-}" = __step ]; then
  export STEP=$2
  "step_$2"
  exit
fi

# ----------------------------------------------------------------------------- driver
START=$SECONDS
BUDGET=${GPU_RUN_BUDGET_S:-390}
export WORK
WORK=$(mktemp -d -t mmelsa-gpu-run.XXXXXX)
export LOGS=$WORK/logs
mkdir -p "$OUT" "$LOGS"
: > "$OUT/summary.txt"
: > "$OUT/results.md"
failed=0

pack() {  # refresh what comes back: summary and results inside the tarball too
  cp "$OUT/summary.txt" "$OUT/results.md" "$LOGS/" 2>/dev/null
  tar czf "$OUT/logs.tar.gz" -C "$LOGS" . 2>/dev/null
}

note() { echo "$*" | tee -a "$OUT/summary.txt"; }

outcome() {  # NAME RC SECONDS: one summary line; a dry run's stop at CUDA counts as reached
  local name=$1 rc=$2 s=$3 where
  if [ "$DRYRUN" = 1 ] && [ "$rc" = 99 ]; then
    where=$(head -1 "$LOGS/$name.stop" 2>/dev/null)
    note "$name reached-cuda ${s}s ($where)"
    return 0
  fi
  [ "$rc" = 124 ] && echo "$name: TIMED OUT"
  note "$name rc=$rc ${s}s"
  [ "$rc" = 0 ] || failed=$((failed + 1))
  [ "$rc" = 0 ]
}

room() {  # LIMIT: the limit cut to what is left of the budget, or nothing if under 20 s left
  local left=$((BUDGET - (SECONDS - START)))
  [ "$left" -ge 20 ] || return 1
  [ "$1" -gt "$left" ] && echo "$left" || echo "$1"
}

step() {  # step NAME LIMIT_S [NEEDS_MMCV]: step_NAME bounded by LIMIT_S and the budget
  local name=$1 limit rc t0
  if [ "${3:-}" = mmcv ] && [ ! -f "$WORK/mmcv_ok" ]; then
    note "$name SKIPPED (needs mmcv, which is not installed: see mmcv.log)"
    return 1
  fi
  if ! limit=$(room "$2"); then
    note "$name SKIPPED (time budget: $((BUDGET - (SECONDS - START)))s left of ${BUDGET}s)"
    failed=$((failed + 1))
    return 1
  fi
  echo "=== [$(date +%T) +$((SECONDS - START))s] $name (limit ${limit}s)"
  t0=$SECONDS
  timeout -k 5 "$limit" bash "$SELF" __step "$name" 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  outcome "$name" "$rc" $((SECONDS - t0))
  rc=$?
  pack
  return "$rc"
}

declare -A BG_PID BG_T0
bg_start() {  # NAME LIMIT_S: a step beside the following ones (correctness only, never timing)
  local name=$1 limit
  if ! limit=$(room "$2"); then note "$name SKIPPED (time budget)"; failed=$((failed + 1)); return; fi
  echo "=== [$(date +%T) +$((SECONDS - START))s] $name started beside the next steps (limit ${limit}s)"
  timeout -k 5 "$limit" bash "$SELF" __step "$name" > "$LOGS/$name.log" 2>&1 &
  BG_PID[$name]=$!
  BG_T0[$name]=$SECONDS
}

bg_wait() {  # NAME
  local name=$1 rc
  [ -n "${BG_PID[$name]:-}" ] || return
  wait "${BG_PID[$name]}"
  rc=$?
  tail -5 "$LOGS/$name.log"
  outcome "$name" "$rc" $((SECONDS - BG_T0[$name]))
  pack
}

result() {  # result TITLE FILE...: append to results.md
  { echo "## $1"; echo; cat "${@:2}" 2>/dev/null; echo; } >> "$OUT/results.md"
}

rev=$(git rev-parse --short HEAD 2>/dev/null || echo 'no git')  # the copy may lack .git
note "gpu_run $(date -u +%FT%TZ) budget ${BUDGET}s commit $rev$([ "$DRYRUN" = 1 ] && echo ' DRY RUN (no GPU)')"

# 0. set-up
step env 30
result "environment" <(grep -v '^  ' "$LOGS/env.log")
[ "$(cat "$WORK/versions" 2>/dev/null)" = match ] \
  || note "VERSIONS DIFFER from the carry's: mmelsa is built here, the steps that need mmcv are skipped"
step install 120
step mmelsa 240
step mmcv 60
step imports 60
step mmcv_cuda 30 mmcv || rm -f "$WORK/mmcv_ok"

# 1. correctness
step ops_check 75
result "python -m mmelsa.ops.check" <(sed -n '/^Worst error/,$p' "$LOGS/ops_check.log")
bg_start memcheck 60
bg_start racecheck 60
step op_tests 120
result "pytest tests/ops -m cuda" <(tail -4 "$LOGS/op_tests.log")
step model_check 120
result "ELSA-Swin-T: CUDA vs CPU float64 reference, AMP, reproducibility" \
  <(grep -E '^(#|PASS|FAIL|INFO|  |all|FAILED)' "$LOGS/model_check.log")
step model_tests 90 mmcv
result "pytest tests/models -m cuda" <(tail -3 "$LOGS/model_tests.log")
bg_wait memcheck
bg_wait racecheck
result "compute-sanitizer memcheck / racecheck" <(tail -3 "$LOGS/memcheck.log"; tail -3 "$LOGS/racecheck.log")

# 2. the operator (nothing else runs on the GPU from here on)
step bench_tiled 90
result "Tiled fast path vs generic CUDA kernels (same build)" "$LOGS/bench_tiled.md"
step bench_op 90
step floors 30
result "ELSA operator, CUDA, against the unfold reference" "$LOGS/bench_op.md"
result "Measured ceilings and floors; time over floor" "$LOGS/floors.log"
step bench_tiled_cl 60
result "Tiled vs generic on channels-last inputs (ELSAAttention's layouts), fp16" \
  "$LOGS/bench_tiled_cl.md"

# 3. end to end, AMP
step backbone_coco 120 mmcv
result "ELSA-Swin-T vs Swin-T, 800x1344 batch 2, AMP" <(sed -n '/^#/,$p' "$LOGS/backbone_coco.log")
step backbone_in1k 90 mmcv
result "ELSA-Swin-T vs Swin-T, 224 batch 64, AMP" <(sed -n '/^#/,$p' "$LOGS/backbone_in1k.log")

# 4. if time is left
step toy 300 mmcv
result "toy Mask R-CNN, --amp" <(grep -E '^(det \(|toy det train|\[run_toy)' "$LOGS/toy.log")

note "failed or skipped steps: $failed; total $((SECONDS - START))s"
pack
echo
cat "$OUT/results.md"  # the end of the output is what a reader sees first: the summary last
echo
cat "$OUT/summary.txt"
exit "$((failed > 0))"
