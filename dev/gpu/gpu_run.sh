#!/usr/bin/env bash
# The one driver for a lent GPU machine (the `run` device tool): set up, prove the CUDA path
# correct, measure it. See docs/gpu_runbook.md for the exact calls and their expected times.
#
#   STAGES="correctness bench_tiled" bash dev/gpu/gpu_run.sh
#
# Needs .whl/ from dev/gpu/prepare_carry.sh, carried with the call (carry [".whl"]).
# The set-up always runs first and is idempotent (seconds when the machine is still warm):
#   install the carried wheels into the image's python3 (install_carry.sh); start building mmcv
#   2.1.0 with its CUDA ops from the carried sdist in the background (nice 19, ~5-7 min,
#   estimated), unless mmcv is already installed or a wheel built by an earlier call is in .whl/;
#   build mmelsa with its CUDA kernels in place (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=9.0).
# Stages (STAGES, in this order whatever the order given; default: all of them; STAGES=setup:
# the set-up alone):
#   correctness     tests/ops with CUDA, compute-sanitizer memcheck + racecheck (cuda_checks.sh
#                   --no-bench), the CUDA test of tests/models, and ELSA-Swin-T on CUDA against
#                   a CPU float64 reference plus bitwise reproducibility (elsa_swin_cuda_check.py)
#   bench_tiled     benchmark_elsa_op.py --device cuda --compare-generic: the tiled fast path
#                   against the generic kernels of the same build (old vs new: time, result
#                   difference, bitwise reproducibility), plain and fused, every stage shape;
#                   then on channels-last inputs (COCO shapes, fp16)
#   bench_op        benchmark_elsa_op.py --device cuda (Swin-T stage shapes, COCO 800x1333 batch
#                   2 and ImageNet 224 batch 64, fp32/fp16/bf16, fwd/bwd), then gpu_floors.py:
#                   measured copy bandwidth and FMA rate, each row's floor and time / floor
#   bench_backbone  [needs mmcv] benchmark_backbone.py: ELSA-Swin-T vs mmdet's Swin-T under AMP,
#                   train step and inference, time and peak memory, at 800x1344 batch 2 with a
#                   full Mask R-CNN train step (--detector), and at 224 batch 64
#   toy             [needs mmcv] the toy Mask R-CNN trained (300 iterations, --amp) and tested
#                   on the GPU through tools/run_toy.sh; time per iteration from its log
# Every step runs even if an earlier one failed (a step that needs mmcv is skipped, with a
# reason, when mmcv is not there). Steps stop being started when the time budget
# (GPU_RUN_BUDGET_S, default 560 s: the run tool allows 600) would be overrun.
#
# What comes back in $OUT (the tool returns at most 8 files):
#   summary.txt   one line per step: rc, seconds; the mmcv wheel's sha256 when one was built
#   results.md    the tables and verdicts, as produced
#   logs.tar.gz   every step's full log (re-packed after each step, so a kill leaves it)
#   mmcv-2.1.0-cp312-cp312-linux_x86_64.whl.partN  the mmcv wheel built here, in <= 15 MiB
#                 pieces: `bash dev/gpu/fetch_mmcv_wheel.sh FILES_AT` puts it into .whl/,
#                 and later calls install it in seconds instead of building for minutes
# Other knobs: CARRY_DIR (.whl), PY (python3), MMCV_JOBS (nproc), MMCV_CUDA (1; 0 builds mmcv's
#   CPU ops only, enough for the backbone rows without --detector), BENCH_REPS (20),
#   TOY_ARGS (extra tools/train.py arguments for the toy run).
# shellcheck disable=SC2329  # the step_* functions are called by name: "step_$2"
set -uo pipefail  # not -e: a failing step is recorded and the next one runs

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SELF=$ROOT/dev/gpu/gpu_run.sh
cd "$ROOT" || exit 1
export OUT=${OUT:-$ROOT/.devout}
export PY=${PY:-python3}
export CARRY_DIR=${CARRY_DIR:-$ROOT/.whl}
export WORK=${GPU_RUN_WORK:-/tmp/gpu_run}  # survives between calls only while the machine is warm
export MMCV_DIR=$WORK/mmcv
export MMCV_JOBS=${MMCV_JOBS:-$(nproc)}
export MMCV_CUDA=${MMCV_CUDA:-1}
export MMCV_WHEEL_NAME=mmcv-2.1.0-cp312-cp312-linux_x86_64.whl
export BENCH_REPS=${BENCH_REPS:-20}
export TOY_ARGS=${TOY_ARGS:-}
export PYTHONUNBUFFERED=1
# tools/*.py and dev/gpu/*.py import mmelsa from this checkout (built in place, not installed)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
# torch's extension builder runs `ninja` from PATH: the image has it next to its python3
PATH="$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))' 2>/dev/null):$PATH"
export PATH
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}

# ----------------------------------------------------------------------------- step bodies
# Each runs in its own bash (`gpu_run.sh __step NAME`) so that `timeout` can bound it.

mmcv_cuda_ok() {  # mmcv is installed, its ops load, and (MMCV_CUDA=1) nms runs on the GPU
  "$PY" - <<'PY' >/dev/null 2>&1
import os, torch
import mmcv.ops
if os.environ.get('MMCV_CUDA', '1') == '1':
    b = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.]], device='cuda')
    keep = mmcv.ops.nms(b, torch.tensor([0.9, 0.8], device='cuda'), 0.5)[1]
    assert keep.tolist() == [0]
PY
}

mmcv_state() {  # installed | building | built | failed | absent
  if [ -f "$MMCV_DIR/build.started" ] && [ ! -f "$MMCV_DIR/build.rc" ]; then
    # The build writes its pid as its first action; a pid that is gone without an exit status
    # means the build was killed.
    if [ -f "$MMCV_DIR/build.pid" ] && ! kill -0 "$(cat "$MMCV_DIR/build.pid")" 2>/dev/null; then
      echo failed
    else
      echo building
    fi
    return
  fi
  # (the marker saves the 5-10 s of importing torch and mmcv for every later question)
  if [ -f "$MMCV_DIR/installed" ] || mmcv_cuda_ok; then
    mkdir -p "$MMCV_DIR" && : > "$MMCV_DIR/installed"
    echo installed
    return
  fi
  if [ -f "$MMCV_DIR/build.rc" ]; then
    if [ "$(cut -d' ' -f1 "$MMCV_DIR/build.rc")" = 0 ] && [ -f "$MMCV_DIR/dist/$MMCV_WHEEL_NAME" ]; then
      echo built
    else
      echo failed
    fi
    return
  fi
  echo absent
}

mmcv_install_wheel() {  # WHEEL
  rm -f "$MMCV_DIR/installed"
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --force-reinstall \
    --no-cache-dir "$1" && mmcv_cuda_ok && mkdir -p "$MMCV_DIR" && : > "$MMCV_DIR/installed"
}

mmcv_heavy_first() {  # SETUP_PY: change the compile order of mmcv's sources, nothing else
  # ninja starts the compile statements about in the order of the sources, and mmcv lists its
  # .cpp files first. A few .cu files take minutes (filtered_lrelu.cu compiled 5.6 times as long
  # as roi_align_cuda.cu on the CPU machine), so started last they would finish alone, minutes
  # after the rest. Longest first keeps all cores busy to the end. Same objects, same wheel.
  "$PY" - "$1" <<'PY' || echo "(mmcv setup.py left as it is)"
import sys
path = sys.argv[1]
src = open(path).read()
helper = """

def _heavy_first(files):  # added by mmelsa's dev/gpu/gpu_run.sh: compile order only
    heavy = ['filtered_lrelu.cu', 'cudabind.cpp', 'upfirdn2d_kernel.cu', 'bias_act_cuda.cu',
             'ms_deform_attn_cuda.cu']
    def key(f):
        name = f.replace(chr(92), '/').rsplit('/', 1)[-1]
        return (heavy.index(name) if name in heavy else len(heavy), not f.endswith('.cu'), f)
    return sorted(files, key=key)
"""
n = src.count('sources=op_files,')
if n and 'def get_extensions():' in src:
    src = src.replace('sources=op_files,', 'sources=_heavy_first(op_files),')
    src = src.replace('\ndef get_extensions():', helper + '\n\ndef get_extensions():', 1)
    open(path, 'w').write(src)
print('mmcv setup.py: longest sources compile first (%d places)' % n)
PY
}

mmcv_start_build() {
  mkdir -p "$MMCV_DIR"
  rm -rf "$MMCV_DIR/src" "$MMCV_DIR/dist" "$MMCV_DIR"/build.* "$MMCV_DIR/installed"
  mkdir -p "$MMCV_DIR/src" && tar xzf "$CARRY_DIR/mmcv-2.1.0.tar.gz" -C "$MMCV_DIR/src" || return 1
  mmcv_heavy_first "$MMCV_DIR/src/mmcv-2.1.0/setup.py"
  local cuda_env="FORCE_CUDA=1"
  # MMCV_CUDA=0: hide the GPU so that mmcv's setup.py compiles the CPU ops only (~3 min).
  [ "$MMCV_CUDA" = 1 ] || cuda_env="FORCE_CUDA=0 CUDA_VISIBLE_DEVICES="
  # setsid: the build outlives this call's command if the machine stays warm for the next call.
  # nice 19: tests and benchmarks running meanwhile get the CPU first.
  setsid nohup bash -c "
    echo \$\$ > '$MMCV_DIR/build.pid'  # its own pid (setsid may have forked)
    cd '$MMCV_DIR/src/mmcv-2.1.0' || exit 1
    t0=\$(date +%s)
    env MMCV_WITH_OPS=1 $cuda_env TORCH_CUDA_ARCH_LIST='$TORCH_CUDA_ARCH_LIST' \
        MAX_JOBS='$MMCV_JOBS' nice -n 19 '$PY' setup.py bdist_wheel -d '$MMCV_DIR/dist'
    echo \"\$? \$((\$(date +%s) - t0))\" > '$MMCV_DIR/build.rc'
  " > "$MMCV_DIR/build.log" 2>&1 < /dev/null &
  : > "$MMCV_DIR/build.started"
  echo "mmcv build started in the background (pid $!, MAX_JOBS=$MMCV_JOBS, MMCV_CUDA=$MMCV_CUDA, log $MMCV_DIR/build.log)"
}

step_env() {  # fails when torch sees no GPU: nothing below would mean anything then
  local rc
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], sys.executable);
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name())'
  rc=$?
  nvcc --version | tail -2
  command -v ninja compute-sanitizer ncu || true
  echo "cores $(nproc); $(free -g | awk '/Mem:/{print $2" GiB RAM"}'); disk $(df -h /tmp | awk 'NR==2{print $4}') free"
  "$PY" -c 'import setuptools; print("setuptools", setuptools.__version__)'
  "$PY" -m pip list --disable-pip-version-check 2>/dev/null
  return "$rc"
}

step_install() { PY=$PY CARRY_DIR=$CARRY_DIR bash "$ROOT/dev/gpu/install_carry.sh"; }

step_mmcv_start() {
  local state
  state=$(mmcv_state)
  echo "mmcv: $state"
  case $state in
    installed | building) return 0 ;;
    built) mmcv_install_wheel "$MMCV_DIR/dist/$MMCV_WHEEL_NAME"; return ;;
    failed) echo "an earlier mmcv build failed on this machine: see mmcv_build.log"; return 1 ;;
  esac
  if [ -f "$CARRY_DIR/$MMCV_WHEEL_NAME" ]; then
    echo "installing the mmcv wheel built by an earlier call ($CARRY_DIR/$MMCV_WHEEL_NAME)"
    if mmcv_install_wheel "$CARRY_DIR/$MMCV_WHEEL_NAME"; then echo "mmcv: installed"; return 0; fi
    echo "the carried mmcv wheel does not work here (another torch?): building from the sdist"
  fi
  mmcv_start_build
}

step_mmelsa_build() {
  FORCE_CUDA=1 MAX_JOBS=$(nproc) "$PY" setup.py build_ext --inplace \
    && "$PY" -c 'import mmelsa.ops as o; i = o.info(); print(i); assert i["with_cuda"]'
}

step_mmcv_wait() {  # wait for the background build (bounded by this step's timeout), install it
  local state
  while :; do
    state=$(mmcv_state)
    case $state in
      installed) echo "mmcv with ops: installed"; break ;;
      built) mmcv_install_wheel "$MMCV_DIR/dist/$MMCV_WHEEL_NAME" || return 1 ;;
      building) sleep 10 ;;
      failed) echo "mmcv build failed:"; tail -40 "$MMCV_DIR/build.log"; return 1 ;;
      absent) step_mmcv_start || return 1 ;;
    esac
  done
  [ -f "$MMCV_DIR/build.rc" ] && echo "mmcv build: rc and seconds: $(cat "$MMCV_DIR/build.rc")"
  "$PY" -c 'import mmcv, mmdet, mmseg, mmengine
from mmdet.utils import register_all_modules
register_all_modules()
print("mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "mmseg", mmseg.__version__,
      "mmengine", mmengine.__version__)'
}

step_cuda_checks() { OUT=$LOGS/cuda_checks bash "$ROOT/dev/gpu/cuda_checks.sh" --no-bench; }

step_model_tests() {
  "$PY" -m pytest tests/models -m cuda -q -ra -p no:cacheprovider
}

step_model_check() { "$PY" dev/gpu/elsa_swin_cuda_check.py; }

step_bench_op() {
  "$PY" tools/analysis_tools/benchmark_elsa_op.py --device cuda --reps "$BENCH_REPS" \
    | tee "$LOGS/bench_op.md"
}

step_bench_tiled() {
  "$PY" tools/analysis_tools/benchmark_elsa_op.py --device cuda --compare-generic \
    --reps "$BENCH_REPS" | tee "$LOGS/bench_tiled.md"
}

# the layouts ELSAAttention passes: tiled reads them in place, generic copies them to NCHW
step_bench_tiled_cl() {
  "$PY" tools/analysis_tools/benchmark_elsa_op.py --device cuda --compare-generic \
    --channels-last --cases coco-s1 coco-s2 coco-s3 --dtypes float16 --reps "$BENCH_REPS" \
    | tee "$LOGS/bench_tiled_cl.md"
}

step_floors() {
  "$PY" dev/gpu/gpu_floors.py --bench-table "$LOGS/bench_op.md" --json "$LOGS/floors.json"
}

step_backbone_coco() {
  local det=(--detector)
  [ "$MMCV_CUDA" = 1 ] || det=()  # mmcv without CUDA ops cannot run the detector on the GPU
  "$PY" tools/analysis_tools/benchmark_backbone.py --device cuda --batch 2 --size 800 1344 \
    --reps 10 --warmup 3 "${det[@]}"
}

step_backbone_in1k() {
  "$PY" tools/analysis_tools/benchmark_backbone.py --device cuda --batch 64 --size 224 224 \
    --reps 10 --warmup 3
}

step_toy() {
  # run_toy.sh: data (seeded), train, test, metrics; --amp on the GPU. --overwrite is its own.
  # shellcheck disable=SC2097,SC2098  # the variables are meant for run_toy.sh alone
  PYTHON=$PY TASKS=det WORK_DIR=$WORK/toy DET_TRAIN_ARGS="--amp $TOY_ARGS" \
    bash "$ROOT/tools/run_toy.sh" || return
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
  "step_$2"
  exit
fi

# ----------------------------------------------------------------------------- driver
START=$SECONDS
BUDGET=${GPU_RUN_BUDGET_S:-560}
STAGES=${STAGES:-correctness bench_tiled bench_op bench_backbone toy}
[ "$STAGES" = all ] && STAGES="correctness bench_tiled bench_op bench_backbone toy"
for s in $STAGES; do
  case $s in
    setup | correctness | bench_tiled | bench_op | bench_backbone | toy) ;;
    *) echo "unknown stage '$s' (stages: setup correctness bench_tiled bench_op bench_backbone toy, or all)" >&2
       exit 2 ;;
  esac
done
export LOGS
LOGS=$WORK/logs-$(date +%H%M%S)
mkdir -p "$OUT" "$LOGS"
: > "$OUT/summary.txt"
: > "$OUT/results.md"
failed=0

pack() {  # refresh what comes back: summary and results inside the tarball too
  cp "$OUT/summary.txt" "$OUT/results.md" "$LOGS/" 2>/dev/null
  [ -f "$MMCV_DIR/build.log" ] && cp "$MMCV_DIR/build.log" "$LOGS/mmcv_build.log"
  tar czf "$OUT/logs.tar.gz" -C "$LOGS" . 2>/dev/null
}

note() { echo "$*" | tee -a "$OUT/summary.txt"; }

step() {  # step NAME LIMIT_S: run step_NAME bounded by LIMIT_S and by what is left of the budget
  local name=$1 limit=$2 left rc t0
  left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 30 ]; then
    note "$name SKIPPED (time budget: ${left}s left of ${BUDGET}s)"
    failed=$((failed + 1))
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== [$(date +%T) +$((SECONDS - START))s] $name (limit ${limit}s)"
  t0=$SECONDS
  timeout -k 10 "$limit" bash "$SELF" __step "$name" 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && echo "$name: TIMED OUT after ${limit}s"
  note "$name rc=$rc $((SECONDS - t0))s"
  [ "$rc" = 0 ] || failed=$((failed + 1))
  pack
  return "$rc"
}

result() {  # result TITLE FILE...: append to results.md
  { echo "## $1"; echo; cat "${@:2}" 2>/dev/null; echo; } >> "$OUT/results.md"
}

rev=$(git rev-parse --short HEAD 2>/dev/null || echo 'no git')  # the device copy may lack .git
note "gpu_run $(date -u +%FT%TZ) stages: $STAGES; budget ${BUDGET}s; commit $rev"

# Set-up: idempotent, always first.
step env 60
result "environment" <(head -7 "$LOGS/env.log")
step install 180
setup_ok=$?
step mmcv_start 120
step mmelsa_build 420 || setup_ok=1
[ "$setup_ok" = 0 ] || note "set-up failed: the stages below will fail too (see install.log, mmelsa_build.log)"

mmcv_ready=unknown
need_mmcv() {  # once per call: wait for the background build, bounded by the budget
  if [ "$mmcv_ready" = unknown ]; then
    if step mmcv_wait 900; then mmcv_ready=yes; else mmcv_ready=no; fi
  fi
  [ "$mmcv_ready" = yes ] && return 0
  note "$1 SKIPPED (mmcv with ops is not available: see mmcv_wait.log)"
  failed=$((failed + 1))
  return 1
}

building_note() {
  [ "$(mmcv_state)" = building ] && echo "(measured while the mmcv build ran in the background at nice 19)"
}

for stage in correctness bench_tiled bench_op bench_backbone toy; do
  case " $STAGES " in *" $stage "*) ;; *) continue ;; esac
  case $stage in
    correctness)
      step cuda_checks 480
      result "cuda_checks.sh --no-bench (build, import, pytest tests/ops, memcheck, racecheck)" \
        "$LOGS/cuda_checks/summary.txt"
      step model_tests 180
      result "pytest tests/models -m cuda" <(tail -3 "$LOGS/model_tests.log")
      step model_check 300
      result "ELSA-Swin-T: CUDA vs CPU float64 reference, reproducibility" \
        <(grep -E '^(#|PASS|FAIL|INFO|  |all|FAILED)' "$LOGS/model_check.log")
      ;;
    bench_tiled)
      step bench_tiled 200
      result "Tiled fast path vs generic CUDA kernels (old vs new, same build) $(building_note)" \
        "$LOGS/bench_tiled.md"
      step bench_tiled_cl 120
      result "The same on channels-last inputs (ELSAAttention's layouts), fp16" \
        "$LOGS/bench_tiled_cl.md"
      ;;
    bench_op)
      bn=$(building_note)
      step bench_op 300
      step floors 120
      result "ELSA operator, CUDA $bn" "$LOGS/bench_op.md"
      result "Measured ceilings and floors; time over floor" "$LOGS/floors.log"
      ;;
    bench_backbone)
      need_mmcv bench_backbone || continue
      step backbone_coco 300
      result "ELSA-Swin-T vs Swin-T, 800x1344 batch 2, AMP" <(sed -n '/^#/,$p' "$LOGS/backbone_coco.log")
      step backbone_in1k 240
      result "ELSA-Swin-T vs Swin-T, 224 batch 64, AMP" <(sed -n '/^#/,$p' "$LOGS/backbone_in1k.log")
      ;;
    toy)
      need_mmcv toy || continue
      step toy 360
      result "toy Mask R-CNN, --amp on the GPU" <(grep -E '^(det \(|toy det train|\[run_toy)' "$LOGS/toy.log")
      ;;
  esac
done

# A build still running would be lost when the machine goes cold: use what budget is left to
# finish it, so that its wheel comes back (the next call then installs it in seconds).
if [ "$(mmcv_state)" = building ]; then
  step mmcv_wait 900
fi

# Ship an mmcv wheel built on this machine (unless the call carried the same one), in pieces
# under the 16 MiB per-file limit of what comes back.
wheel=$MMCV_DIR/dist/$MMCV_WHEEL_NAME
if [ -f "$wheel" ] && ! cmp -s "$wheel" "$CARRY_DIR/$MMCV_WHEEL_NAME"; then
  split -b 15M -d -a 1 "$wheel" "$OUT/$MMCV_WHEEL_NAME.part"
  parts=$(find "$OUT" -maxdepth 1 -name "$MMCV_WHEEL_NAME.part*" | wc -l)
  note "mmcv_wheel $MMCV_WHEEL_NAME bytes=$(stat -c %s "$wheel") sha256=$(sha256sum "$wheel" | cut -d' ' -f1) parts=$parts build_rc_s=$(cat "$MMCV_DIR/build.rc")"
elif [ "$(mmcv_state)" = building ]; then
  note "mmcv build still running ($(($(date +%s) - $(stat -c %Y "$MMCV_DIR/build.started")))s so far): a call within 30 s finds it; later, the machine is fresh and builds again"
fi
note "failed or skipped steps: $failed; total $((SECONDS - START))s"
pack
echo
cat "$OUT/results.md"  # the reply keeps only the end of the output: the summary comes last
echo
cat "$OUT/summary.txt"
exit "$((failed > 0))"
