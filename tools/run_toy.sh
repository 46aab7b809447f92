#!/usr/bin/env bash
# The embedded default, end to end on a CPU: generate the toy data, train the toy ELSA-Swin
# Mask R-CNN and UperNet, test both, and show what they learnt: pictures of ground truth and
# predictions, the loss and validation curves, and a table of the metrics next to the untrained
# models'. About 10 minutes on 2 idle CPU cores (579 s measured, 2026-11-24). On a busy
# machine run it with OMP_NUM_THREADS=1: 2 threads that wait on each other's time slices run
# several times slower there.
#
#   bash tools/run_toy.sh            # both tasks
#   TASKS=det bash tools/run_toy.sh  # only the detector (TASKS=seg: only the segmenter)
#   TASKS=cls bash tools/run_toy.sh  # the toy ELSA-Swin classifier (mmpretrain), not a default
#   TASKS=ddf bash tools/run_toy.sh  # the toy DDF-ResNet classifier (same data), not a default
#   WORK_DIR=work_dirs/toy  SEED=0   # where runs go (default), the data seed (default 0)
#   DATA_DIR=data                    # parent of toy_coco/, toy_ade/, toy_cls/ (default data)
#   DET_TRAIN_ARGS / SEG_TRAIN_ARGS / CLS_TRAIN_ARGS   # extra tools/train.py arguments, e.g.
#       DET_TRAIN_ARGS="--cfg-options train_cfg.max_epochs=1"
#   TOY_GEN_ARGS="--num-train 24 --num-val 8"   # extra generator arguments (smaller sets)
#
# The data is regenerated only if missing or stale (other seed / sizes / generator version).
# Per task, under $WORK_DIR/<task>/: vis/ (every validation image, ground truth | prediction),
# overview.png (a grid of six of them), curves.png (loss and metric over the run),
# summary.json; the table at the end names them.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
TASKS=${TASKS:-"det seg"}
WORK_DIR=${WORK_DIR:-work_dirs/toy}
SEED=${SEED:-0}
DATA_DIR=${DATA_DIR:-data}
DET_TRAIN_ARGS=${DET_TRAIN_ARGS:-}
SEG_TRAIN_ARGS=${SEG_TRAIN_ARGS:-}
CLS_TRAIN_ARGS=${CLS_TRAIN_ARGS:-}
DDF_TRAIN_ARGS=${DDF_TRAIN_ARGS:-}
TOY_GEN_ARGS=${TOY_GEN_ARGS:-}
DET_CFG=configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py
SEG_CFG=configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py
CLS_CFG=configs/toy/elsa-swin-toy_1xb32-8e_toy-cls-64px.py
DDF_CFG=configs/toy/ddf-resnet-toy_1xb32-8e_toy-cls-64px.py
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

t_start=$(date +%s)
stamp() { echo "[run_toy $(($(date +%s) - t_start))s] $*"; }
mkdir -p "$WORK_DIR"
TIMES="$WORK_DIR/times.txt"
: > "$TIMES"
timed() {  # part command...: runs the command, appends "<part> <seconds>" to $TIMES
    local part=$1 t0 rc=0
    shift
    t0=$(date +%s)
    "$@" || rc=$?
    echo "$part $(($(date +%s) - t0))" >> "$TIMES"
    stamp "$part: $(($(date +%s) - t0)) s"
    return $rc
}

for task in $TASKS; do
    case $task in
        det | seg | cls | ddf) ;;
        *) echo "unknown task $task (use det, seg, cls and/or ddf)" >&2; exit 2 ;;
    esac
done

# Only the sets the tasks use: the classification set alone is 12000 images (both classifiers
# train on it).
KINDS=$(for task in $TASKS; do echo "${task/ddf/cls}"; done | sort -u | tr '\n' ' ')
stamp "generating toy data (seed $SEED, for: $KINDS) with $PYTHON"
# shellcheck disable=SC2086  # KINDS and TOY_GEN_ARGS are lists of words on purpose
timed "data" "$PYTHON" -m mmelsa.datasets.toy --out "$DATA_DIR" --kind $KINDS --seed "$SEED" \
    $TOY_GEN_ARGS

# The configs read data/...; another DATA_DIR is passed to every dataset and evaluator.
data_opts() {  # task
    if [ "$DATA_DIR" = data ]; then return; fi
    local k
    if [ "$1" = det ]; then
        for k in train val test; do echo "${k}_dataloader.dataset.data_root=$DATA_DIR/toy_coco/"; done
        for k in val test; do echo "${k}_evaluator.ann_file=$DATA_DIR/toy_coco/annotations/instances_val.json"; done
    elif [ "$1" = seg ]; then
        for k in train val test; do echo "${k}_dataloader.dataset.data_root=$DATA_DIR/toy_ade"; done
    else
        for k in train val test; do echo "${k}_dataloader.dataset.data_root=$DATA_DIR/toy_cls"; done
    fi
}

run_task() {  # task config extra-train-args data-folder kind (det, seg or cls)
    local task=$1 cfg=$2 extra=$3 data=$4 kind=$5 wd="$WORK_DIR/$1" ckpt line opts pred
    mapfile -t opts < <(data_opts "$kind")
    stamp "training $task: $cfg -> $wd (validates the untrained model first)"
    # shellcheck disable=SC2086  # $extra is a list of arguments on purpose
    # --overwrite: this script owns $WORK_DIR and retrains from scratch on every run (the
    # train tool refuses to replace an earlier run's checkpoints without being told to).
    timed "train $task" "$PYTHON" tools/train.py "$cfg" --work-dir "$wd" --overwrite \
        ${opts[@]:+--cfg-options "${opts[@]}"} $extra
    ckpt=$(cat "$wd/last_checkpoint")
    # Predictions are saved (det, cls: a .pkl, seg: label PNGs) and drawn by toy_report.py,
    # larger and with only confident detections, rather than by --show-dir at the images' size.
    if [ "$kind" = seg ]; then pred="$wd/pred"; else pred="$wd/pred.pkl"; fi
    rm -rf "$pred"
    stamp "testing $task: $ckpt"
    timed "test $task" "$PYTHON" tools/test.py "$cfg" "$ckpt" --work-dir "$wd" --out "$pred" \
        ${opts[@]:+--cfg-options "${opts[@]}"} | tee "$wd/test.log"
    line=$(grep '^mmelsa-metrics: ' "$wd/test.log" | tail -1)
    stamp "pictures, curves and per-class figures of $task -> $wd"
    timed "report $task" "$PYTHON" tools/analysis_tools/toy_report.py "$kind" "$wd" \
        --data "$data" --pred "$pred" --config "$cfg" --test-metrics "${line#mmelsa-metrics: }"
}

done_dirs=()
for task in $TASKS; do
    case $task in
        det) run_task det "$DET_CFG" "$DET_TRAIN_ARGS" "$DATA_DIR/toy_coco" det ;;
        seg) run_task seg "$SEG_CFG" "$SEG_TRAIN_ARGS" "$DATA_DIR/toy_ade" seg ;;
        cls) run_task cls "$CLS_CFG" "$CLS_TRAIN_ARGS" "$DATA_DIR/toy_cls" cls ;;
        ddf) run_task ddf "$DDF_CFG" "$DDF_TRAIN_ARGS" "$DATA_DIR/toy_cls" cls ;;
    esac
    done_dirs+=("$WORK_DIR/$task")
done

echo
echo "==================== toy end-to-end results ===================="
"$PYTHON" tools/analysis_tools/toy_report.py table "${done_dirs[@]}" --times "$TIMES"
echo "total wall time: $(($(date +%s) - t_start)) s"
