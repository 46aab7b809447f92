#!/usr/bin/env bash
# Install the wheels that tools/device/prepare_carry.sh put into .whl/ into one Python, without
# an index: on the GPU machine (called by gpu_run.sh's setup stage, into the image's python3,
# which already holds torch) and here for the dry run (dryrun_carry.sh, into a throwaway venv).
#
#   PY=python3 CARRY_DIR=.whl bash tools/device/install_carry.sh
#
# Why --no-deps: the set in .whl/ is already the closure of what the image lacks (pip resolved
# it in prepare_carry.sh), and without --no-deps pip would insist on opencv-python for mmengine
# although the image's opencv-python-headless provides the same cv2. --no-deps also guarantees
# that no package of the image (torch, numpy, ...) is replaced. `pip check` afterwards reports
# what is still unmet; the opencv-python line is expected and ignored.
# Idempotent: pip skips wheels already installed at that version (a second run takes seconds).
# The mmcv sdist and an mmcv wheel built on the GPU machine are not handled here (gpu_run.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PY:-python3}
CARRY=${CARRY_DIR:-$ROOT/.whl}
say() { printf '[install_carry %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[install_carry] FAILED: %s\n' "$*" >&2; exit 1; }

[ -d "$CARRY" ] || die "$CARRY does not exist: run tools/device/prepare_carry.sh here and name .whl in the run call's carry"
wheels=()
setuptools_whl=
for f in "$CARRY"/*.whl; do
  [ -f "$f" ] || continue
  case $(basename "$f") in
    setuptools-*) setuptools_whl=$f ;;  # only if needed, below
    mmcv-*) ;;                           # gpu_run.sh installs or builds mmcv
    *) wheels+=("$f") ;;
  esac
done
[ ${#wheels[@]} -gt 0 ] || die "no wheels in $CARRY"

say "installing ${#wheels[@]} carried wheels into $("$PY" -c 'import sys; print(sys.prefix)')"
"$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-cache-dir \
  "${wheels[@]}"

# mmcv 2.1.0's setup.py does `from pkg_resources import ...`: newer setuptools dropped
# pkg_resources, so the carried setuptools<80 is installed only when that import fails.
if "$PY" -c 'from pkg_resources import DistributionNotFound, get_distribution, parse_version' 2>/dev/null; then
  say "setuptools $("$PY" -c 'import setuptools; print(setuptools.__version__)') has pkg_resources: kept"
elif [ -n "$setuptools_whl" ]; then
  say "setuptools $("$PY" -c 'import setuptools; print(setuptools.__version__)' 2>/dev/null || echo '(none)') lacks pkg_resources: installing $(basename "$setuptools_whl") for the mmcv build"
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-cache-dir \
    "$setuptools_whl"
else
  die "this setuptools has no pkg_resources and $CARRY holds no setuptools<80 wheel"
fi

say "pip check (mmengine's opencv-python requirement is met by opencv-python-headless: ignored)"
problems=$("$PY" -m pip check --disable-pip-version-check 2>&1 | grep -v -i 'opencv-python' \
  | grep -v -i '^No broken requirements' || true)
if [ -n "$problems" ]; then
  echo "$problems"
  # Reported, not fatal: the image is not ours to fix, and the import check below decides.
  say "pip check found the unmet requirements above (not fatal; see the import check)"
fi
"$PY" - <<'PY'
import importlib
for name in ('mmengine', 'pycocotools.coco', 'shapely', 'terminaltables', 'addict', 'yapf',
             'termcolor', 'ftfy', 'prettytable', 'cv2', 'numpy', 'scipy', 'matplotlib'):
    mod = importlib.import_module(name)
    print('  %-16s %s' % (name, getattr(mod, '__version__', '')))
PY
say "done"
