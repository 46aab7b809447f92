#!/usr/bin/env bash
# The embedded default, end to end on a CPU: generate the toy data, train the toy ELSA-Swin
# Mask R-CNN and UperNet, test both, print bbox/segm mAP and mIoU, and save pictures of the
# predictions. A few minutes on 2 CPU cores.
#
#   bash tools/run_toy.sh            # both tasks
#   TASKS=det bash tools/run_toy.sh  # only the detector (TASKS=seg: only the segmenter)
#   WORK_DIR=work_dirs/toy  SEED=0   # where runs go (default), the data seed (default 0)
#   DATA_DIR=data                    # parent of toy_coco/ and toy_ade/ (default data)
#   DET_TRAIN_ARGS / SEG_TRAIN_ARGS    # extra tools/train.py arguments for one task, e.g.
#       DET_TRAIN_ARGS="--cfg-options train_cfg.max_epochs=1"
#   TOY_GEN_ARGS="--num-train 24 --num-val 8"   # extra generator arguments (smaller sets)
#
# The data is regenerated only if missing or stale (other seed / generator version).
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
TOY_GEN_ARGS=${TOY_GEN_ARGS:-}
DET_CFG=configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb8-12e_toy-coco.py
SEG_CFG=configs/toy/upernet_elsa-swin-toy_1xb8-400i_toy-ade-128x128.py
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

t_start=$(date +%s)
stamp() { echo "[run_toy $(($(date +%s) - t_start))s] $*"; }

stamp "generating toy data (seed $SEED) with $PYTHON"
# shellcheck disable=SC2086  # TOY_GEN_ARGS is a list of arguments on purpose
"$PYTHON" -m mmelsa.datasets.toy --out "$DATA_DIR" --kind all --seed "$SEED" $TOY_GEN_ARGS

# The configs read data/...; another DATA_DIR is passed to every dataset and evaluator.
data_opts() {  # task
    if [ "$DATA_DIR" = data ]; then return; fi
    local k
    if [ "$1" = det ]; then
        for k in train val test; do echo "${k}_dataloader.dataset.data_root=$DATA_DIR/toy_coco/"; done
        for k in val test; do echo "${k}_evaluator.ann_file=$DATA_DIR/toy_coco/annotations/instances_val.json"; done
    else
        for k in train val test; do echo "${k}_dataloader.dataset.data_root=$DATA_DIR/toy_ade"; done
    fi
}

summary=()
run_task() {  # task config extra-train-args
    local task=$1 cfg=$2 extra=$3 wd="$WORK_DIR/$1" t0 ckpt line opts
    t0=$(date +%s)
    mapfile -t opts < <(data_opts "$task")
    stamp "training $task: $cfg -> $wd"
    # shellcheck disable=SC2086  # $extra is a list of arguments on purpose
    # --overwrite: this script owns $WORK_DIR and retrains from scratch on every run (the
    # train tool refuses to replace an earlier run's checkpoints without being told to).
    "$PYTHON" tools/train.py "$cfg" --work-dir "$wd" --overwrite ${opts[@]:+--cfg-options "${opts[@]}"} $extra
    ckpt=$(cat "$wd/last_checkpoint")
    stamp "testing $task: $ckpt (pictures of the predictions -> $wd/vis)"
    "$PYTHON" tools/test.py "$cfg" "$ckpt" --work-dir "$wd" --show-dir vis \
        ${opts[@]:+--cfg-options "${opts[@]}"} | tee "$wd/test.log"
    line=$(grep '^mmelsa-metrics: ' "$wd/test.log" | tail -1)
    summary+=("$task ($(($(date +%s) - t0))s): ${line#mmelsa-metrics: }")
}

for task in $TASKS; do
    case $task in
        det) run_task det "$DET_CFG" "$DET_TRAIN_ARGS" ;;
        seg) run_task seg "$SEG_CFG" "$SEG_TRAIN_ARGS" ;;
        *) echo "unknown task $task (use det and/or seg)" >&2; exit 2 ;;
    esac
done

echo
echo "==================== toy end-to-end results ===================="
for s in "${summary[@]}"; do echo "$s"; done
echo "prediction pictures: $(find "$WORK_DIR" -path '*vis*' -name '*.png' -o -path '*vis*' -name '*.jpg' | wc -l) files under $WORK_DIR/*/ (folders named vis)"
echo "total wall time: $(($(date +%s) - t_start)) s"
