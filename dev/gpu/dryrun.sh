#!/usr/bin/env bash
# `gpu_run.sh --dry-run`: the whole GPU command rehearsed on a machine without a GPU, so that a
# broken carry shows up here and not on the GPU machine. Timed; exit status 0 when every step
# passed or reached its first CUDA call.
#
#   bash dev/gpu/gpu_run.sh --dry-run     # DRYRUN_DIR=... to keep the scratch folder
#
# 1. A fresh Python 3.12 venv with stand-ins for what the GPU image already has: its Python
#    packages from PyPI (numpy, scipy, matplotlib, opencv-python-headless, pytest, ...) and
#    torch 2.11.0+cu130 with its nvidia-* libraries linked in from build_carry.sh's venv (the
#    image's torch; nothing downloaded). This part is NOT what the GPU machine does.
# 2. The files that travel to the GPU machine (the working tree as git sees it, tracked and
#    untracked-not-ignored, and .whl/) copied to a scratch folder; their size is printed.
# 3. gpu_run.sh run there with DRYRUN=1, offline (no pip configuration, no index): the carried
#    wheels installed into the venv, mmelsa's prebuilt extension and the mmcv wheel put in
#    place and imported (mmcv._ext included), then every step up to its first CUDA call.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CARRY=${CARRY_DIR:-$ROOT/.whl}
BUILD=${BUILD_DIR:-$ROOT/build/carry}
DRY=${DRYRUN_DIR:-$(mktemp -d -t mmelsa-dryrun.XXXXXX)}
say() { printf '\n[dryrun %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[dryrun] FAILED: %s\n' "$*" >&2; exit 1; }
T0=$SECONDS

[ -f "$CARRY/BUILT_FOR.txt" ] || die "no $CARRY/BUILT_FOR.txt: run dev/gpu/build_carry.sh first"
TORCH_SITE=$("$BUILD/venv312/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null) \
  || die "no $BUILD/venv312 (build_carry.sh's venv with torch 2.11.0+cu130): run build_carry.sh venv"
PY312=$(readlink -f "$BUILD/venv312/bin/python")  # the same Python 3.12 the venv was made from

say "1. fresh Python 3.12 venv in $DRY/venv with stand-ins for the GPU image's packages"
rm -rf "$DRY/venv" "$DRY/tree" "$DRY/out"
mkdir -p "$DRY"
"$PY312" -m venv "$DRY/venv"
PY=$DRY/venv/bin/python
# setuptools unpinned on purpose, as the image's may be new
"$PY" -m pip install -q --disable-pip-version-check numpy scipy matplotlib \
  opencv-python-headless pyyaml rich packaging pillow six tqdm regex setuptools wheel pytest \
  psutil requests
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
n=0
for f in "$TORCH_SITE"/*; do
  b=$(basename "$f")
  case ${b,,} in
    torch | torch-* | torchgen | functorch | nvidia* | triton* | cuda* | sympy* | mpmath* \
    | networkx* | jinja2* | markupsafe* | fsspec* | filelock* | typing_extensions*)
      [ -e "$SITE/$b" ] || { ln -s "$f" "$SITE/$b"; n=$((n + 1)); } ;;
  esac
done
say "linked $n entries of torch 2.11.0+cu130 and its requirements; $("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')"

say "2. the travelling files, copied to $DRY/tree"
mkdir -p "$DRY/tree"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) \
  | tar -xf - -C "$DRY/tree"
cp -a "$CARRY" "$DRY/tree/.whl"
tree_b=$(du -sb --exclude=.whl "$DRY/tree" | cut -f1)
carry_b=$(du -sb "$DRY/tree/.whl" | cut -f1)
awk -v t="$tree_b" -v c="$carry_b" 'BEGIN{printf "  working tree %.1f MiB + .whl %.1f MiB = %.1f MiB (limit 64 MiB)\n", t/1048576, c/1048576, (t+c)/1048576}'

say "3. gpu_run.sh there, DRYRUN=1, offline"
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT
t=$SECONDS
rc=0
(cd "$DRY/tree" && PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 DRYRUN=1 PY=$PY OUT=$DRY/out \
   bash dev/gpu/gpu_run.sh) > "$DRY/gpu_run.log" 2>&1 || rc=$?
say "gpu_run.sh --dry-run: rc=$rc in $((SECONDS - t)) s (set-up of the stand-ins and copy: $((t - T0)) s); log $DRY/gpu_run.log"
cat "$DRY/out/summary.txt"
exit "$rc"
