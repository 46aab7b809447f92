#!/usr/bin/env bash
# Dry run, on a machine WITHOUT a GPU, of the install half of gpu_run.sh: proves that .whl/
# (from prepare_carry.sh) is complete for a Python 3.12 that has what the GPU image has.
#
#   bash dev/gpu/dryrun_carry.sh     # makes /tmp/mmelsa-dryrun-venv (DRYRUN_VENV=...)
#
# A. From PyPI, into a throwaway Python 3.12 venv: stand-ins for packages the GPU image already
#    has (numpy, scipy, matplotlib, opencv-python-headless, pyyaml, rich, ...; no torch: PyPI's
#    torch for Linux is the multi-GB CUDA build). This part is NOT what the GPU machine does.
# B. Exactly what gpu_run.sh does, offline: install_carry.sh (pip --no-index --no-deps from
#    .whl/, pip check, imports).
# C. mmcv 2.1.0 from the carried sdist, offline, WITHOUT its compiled ops (MMCV_WITH_OPS=0; there
#    is no torch here): proves the sdist's setup.py runs with the setuptools gpu_run.sh would use,
#    and lets `import mmdet, mmseg` (torch-free at the top level) check the versions they pin.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${DRYRUN_VENV:-/tmp/mmelsa-dryrun-venv}
CARRY=${CARRY_DIR:-$ROOT/.whl}
say() { printf '\n[dryrun %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

PY312=${PY312:-}
if [ -z "$PY312" ]; then
  for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
      PY312=$(command -v "$c"); break
    fi
  done
fi
[ -n "$PY312" ] || { echo "no Python 3.12: set PY312" >&2; exit 1; }

rm -rf "$VENV"
"$PY312" -m venv "$VENV"
PY=$VENV/bin/python

say "A. stand-ins for the GPU image's packages, from PyPI (not part of the GPU run)"
# setuptools unpinned on purpose: the newest one shows whether the pkg_resources fallback works.
"$PY" -m pip install -q --disable-pip-version-check numpy scipy matplotlib \
  opencv-python-headless pyyaml rich packaging pillow six tqdm regex setuptools wheel
"$PY" -m pip list --disable-pip-version-check 2>/dev/null | sed 's/^/  /'

# B and C see no pip configuration of this machine (its find-links and local indexes would
# make the check less strict than the GPU machine, which has nothing but .whl/).
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT
export PIP_CONFIG_FILE=/dev/null

say "B. install_carry.sh, offline, as on the GPU machine"
PY=$PY CARRY_DIR=$CARRY bash "$ROOT/dev/gpu/install_carry.sh"

say "C. mmcv 2.1.0 from the carried sdist, offline, without ops (no torch here)"
MMCV_WITH_OPS=0 "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps \
  --no-build-isolation --no-cache-dir "$CARRY/mmcv-2.1.0.tar.gz"
"$PY" - <<'PY'
import mmcv, mmdet, mmseg, mmengine
from mmengine.config import Config
cfg = Config(dict(model=dict(type='MaskRCNN', backbone=dict(type='ELSASwinTransformer'))))
assert 'ELSASwinTransformer' in cfg.pretty_text  # yapf formats the config text
print('  mmcv %s (lite: no ops) | mmengine %s | mmdet %s | mmseg %s: imported, versions '
      'accepted by mmdet and mmseg' % (mmcv.__version__, mmengine.__version__,
                                      mmdet.__version__, mmseg.__version__))
PY
"$PY" -m pip check --disable-pip-version-check || true
say "dry run passed; the venv is $VENV (delete it when done)"
