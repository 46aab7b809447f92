#!/usr/bin/env bash
# Install the wheels that dev/gpu/prepare_carry.sh put into .whl/ into one Python, without
# an index: on the GPU machine (gpu_run.sh's set-up, into the image's python3, which already
# holds torch) and here in the dry run (gpu_run.sh --dry-run, into a throwaway venv).
#
#   PY=python3 CARRY_DIR=.whl bash dev/gpu/install_carry.sh
#
# How: mmengine alone with --no-deps (its metadata asks for opencv-python, and the image's
# opencv-python-headless provides the same cv2 module); everything else by name with pip's
# resolver, offline (--no-index --find-links .whl): a requirement that the image already meets
# is kept (pip upgrades only if needed, so torch, numpy & co. are never replaced), and one that
# neither the image nor .whl/ meets fails here, loudly, instead of at import time later. If that
# fails (another Python than the carry's: its cp312 wheels do not fit), the pure-Python wheels
# are installed one by one, so that mmengine and mmelsa still import.
# Why into the image's python3 itself: the GPU machine is fresh for every run and discarded
# after it, and nothing of the image is replaced (above). A venv with --system-site-packages
# would NOT do: the image's python3 is itself a venv, and a venv made from it sees the base
# interpreter's site-packages, not the image venv's torch.
# The mmcv wheel is not handled here (gpu_run.sh installs it when the versions match).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PY:-python3}
CARRY=${CARRY_DIR:-$ROOT/.whl}
say() { printf '[install_carry %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[install_carry] FAILED: %s\n' "$*" >&2; exit 1; }

site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -w "$site" ] || die "$site is not writable: install_carry.sh installs into $PY's own environment"
[ -d "$CARRY" ] || die "$CARRY does not exist: run dev/gpu/build_carry.sh here and send .whl/ with the tree"
# The pins of prepare_carry.sh; every other carried wheel is asked for by its name alone.
declare -A PIN=([mmdet]='mmdet==3.3.0' [mmsegmentation]='mmsegmentation==1.2.2'
                [pycocotools]='pycocotools>=2.0.8')
specs=()
mmengine_whl=
setuptools_whl=
for f in "$CARRY"/*.whl; do
  [ -f "$f" ] || continue
  b=$(basename "$f")
  name=${b%%-*}  # a wheel's file name starts with its project name (PEP 427)
  case $name in
    setuptools) setuptools_whl=$f ;;  # only if needed, below
    mmcv) ;;                          # gpu_run.sh installs or builds mmcv
    mmengine) mmengine_whl=$f ;;
    *) specs+=("${PIN[$name]:-$name}") ;;
  esac
done
[ -n "$mmengine_whl" ] && [ ${#specs[@]} -gt 0 ] || die "no mmengine wheel or no others in $CARRY"
PIP=("$PY" -m pip install -q --disable-pip-version-check --no-index --no-cache-dir
     --find-links "$CARRY")
say "installing into $("$PY" -c 'import sys; print(sys.prefix)'): $(basename "$mmengine_whl") (--no-deps), then ${specs[*]}"
"${PIP[@]}" --no-deps "$mmengine_whl"
say "(if pip now says 'mmengine 0.10.7 requires opencv-python, which is not installed': expected)"
if ! "${PIP[@]}" "${specs[@]}"; then
  say "the carried set does not install into this Python as a whole: the pure-Python wheels one by one"
  for f in "$CARRY"/*-py3-none-any.whl "$CARRY"/*-py2.py3-none-any.whl; do
    [ -f "$f" ] || continue
    case $(basename "$f") in setuptools-* | mmcv-*) continue ;; esac
    "${PIP[@]}" --no-deps "$f" || say "could not install $(basename "$f")"
  done
fi

# mmcv 2.1.0's setup.py does `from pkg_resources import ...`: newer setuptools dropped
# pkg_resources, so the carried setuptools<80 is installed only when that import fails.
if "$PY" -c 'from pkg_resources import DistributionNotFound, get_distribution, parse_version' 2>/dev/null; then
  say "setuptools $("$PY" -c 'import setuptools; print(setuptools.__version__)') has pkg_resources: kept"
elif [ -n "$setuptools_whl" ]; then
  say "setuptools $("$PY" -c 'import setuptools; print(setuptools.__version__)' 2>/dev/null || echo '(none)') lacks pkg_resources: installing $(basename "$setuptools_whl") for the mmcv build"
  "${PIP[@]}" --no-deps "$setuptools_whl"
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
