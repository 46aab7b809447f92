#!/usr/bin/env bash
# Set up mmelsa on a machine that has never seen it, or bring an existing set-up up to date.
#
#   bash tools/setup_env.sh
#
# Makes a virtual environment in the checkout (.venv, or $MMELSA_VENV) and installs:
#   torch 2.14.1 with torchvision 0.29.1 (unless $TORCH_SPEC says otherwise; a torch already in the
#   venv is kept), mmcv 2.1.0 built from source with its ops (the slow step: ~20 min on 2 cores the
#   first time; the wheel is kept per torch build under ~/.cache/mmelsa, so later installs take
#   seconds), mmengine 0.10.7, mmdet 3.3.0, mmsegmentation 1.2.2 and what they need on numpy 2,
#   openmim (for `mim`), MMDeploy 1.3.1, mmpretrain 1.2.0 and timm (classification;
#   MMELSA_SKIP_CLS=1 skips them), then mmelsa itself
#   (a development install: edits in the checkout take effect without reinstalling).
# Idempotent: each step first checks whether its result is already there.
# On a CUDA machine set FORCE_CUDA=1 (and TORCH_CUDA_ARCH_LIST) to build the CUDA kernels of mmcv
# and mmelsa; see README.md.
set -eEuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMELSA_VENV:-$ROOT/.venv}
BASE_PYTHON=${PYTHON:-python3}
# torch and the torchvision built for it, installed together: a torchvision wheel made for another
# build of torch installs, then fails on its own ops ("operator torchvision::nms does not exist"),
# e.g. PyPI's torchvision 0.28.0 beside a torch 2.13.0+cpu. See README.md, "Tested with".
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
MMCV_VERSION=2.1.0
STACK=(mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 'pycocotools>=2.0.8' ftfy regex pytest hypothesis
       ruff clang-format onnx onnxscript onnxruntime)
START=$SECONDS

say() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[setup] FAILED: %s\n' "$*" >&2; exit 1; }
trap 'die "step \"$BASH_COMMAND\" exited with an error (line $LINENO); see the output above"' ERR

cd "$ROOT"
command -v "$BASE_PYTHON" >/dev/null || die "no '$BASE_PYTHON' on PATH: install Python 3.9-3.12 (3.11 is tested) or set PYTHON=/path/to/python"

if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment $VENV"
  "$BASE_PYTHON" -m venv "$VENV" || die "could not create a venv with $BASE_PYTHON (on Debian/Ubuntu: apt-get install python3-venv)"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
say "python: $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"

# True when every requirement given is installed at a version it allows (no network, no pip).
have() {
  "$PY" - "$@" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
from packaging.requirements import Requirement
for spec in sys.argv[1:]:
    req = Requirement(spec)
    try:
        if not req.specifier.contains(version(req.name), prereleases=True):
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PYEOF
}

# 1. Build tools. setuptools<80: mmcv 2.1.0's setup.py imports pkg_resources. Checked again
# before the mmcv build: on a fresh venv a later install can bring in a newer setuptools.
ensure_build_tools() {
  if ! have 'setuptools<80' wheel ninja packaging numpy; then
    say "installing build tools (setuptools<80, wheel, ninja, packaging, numpy)"
    "${PIP[@]}" install -q 'setuptools<80' wheel ninja packaging numpy
  fi
}
ensure_build_tools

# 2. torch: keep the one the user chose.
if "$PY" -c 'import torch' 2>/dev/null; then
  say "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed: kept"
else
  say "installing $TORCH_SPEC (from a local wheel in seconds, else a download of several GB)"
  # shellcheck disable=SC2086  # TORCH_SPEC is a list of requirements
  "${PIP[@]}" install -q $TORCH_SPEC
fi

# 3. mmcv with its compiled ops, from source (PyPI has no wheel for today's torch). Two things
# differ from a plain `pip install mmcv`:
# - mmcv 2.1.0's setup.py forces -std=c++17, and torch 2.14's headers refuse anything below
#   C++20. The sdist is unpacked, that flag removed (torch's build helper then picks the standard
#   its headers need, as it does for mmelsa), and the wheel built from it; nothing else changes.
# - The wheel is built once per torch build and Python and kept in a folder named after them:
#   pip's own wheel cache does not key on the torch a wheel was compiled against, and would hand
#   a wheel built for another torch to this one (it installs, then mmcv.ops fails to load).
build_mmcv_wheel() {  # $1: the folder to put the wheel in
  local work
  work=$(mktemp -d)
  "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation -d "$work" "mmcv==$MMCV_VERSION"
  tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
  "$PY" - "$work/mmcv-$MMCV_VERSION/setup.py" <<'PYEOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
# extra_compile_args['cxx'] = ['-std=c++17'] and extra_compile_args['nvcc'] += ['-std=c++17']
new, n = re.subn(r"(extra_compile_args\['(?:cxx|nvcc)'\] \+?= )\['-std=c\+\+17'\]", r"\1[]", text)
if n != 2:
    sys.exit('mmcv setup.py: expected 2 forced -std=c++17 flags, found %d; not building' % n)
open(path, 'w').write(new)
PYEOF
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" wheel -q --no-build-isolation \
    --no-deps --no-cache-dir -w "$1" "$work/mmcv-$MMCV_VERSION"
  rm -rf "$work"
}
if have "mmcv==$MMCV_VERSION" && "$PY" -c 'import mmcv.ops' 2>/dev/null; then
  say "mmcv $MMCV_VERSION with ops already installed"
else
  ensure_build_tools
  build_key=$("$PY" -c 'import sys, torch; print("py%d%d-torch%s-cuda%s" % (sys.version_info[:2] + (torch.__version__, torch.version.cuda)))')
  build_key="$build_key${FORCE_CUDA:+-forcecuda-${TORCH_CUDA_ARCH_LIST:-default}}"
  wheels="${MMELSA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmelsa/wheels}/mmcv-$MMCV_VERSION-$build_key"
  if ! ls "$wheels"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
    say "building mmcv $MMCV_VERSION with ops from source for $build_key (about 20 min on 2 cores; once per torch build)"
    t0=$SECONDS
    rm -rf "$wheels.partial"
    build_mmcv_wheel "$wheels.partial" \
      || die "mmcv $MMCV_VERSION did not build; the compiler output above says why"
    rm -rf "$wheels" && mv "$wheels.partial" "$wheels"  # a killed build leaves no half folder
    say "mmcv build took $((SECONDS - t0)) s"
  fi
  say "installing mmcv $MMCV_VERSION from $wheels"
  "${PIP[@]}" install -q --force-reinstall --no-deps "$wheels"/mmcv-"$MMCV_VERSION"-*.whl
  "${PIP[@]}" install -q "mmcv==$MMCV_VERSION" --find-links "$wheels"  # its pure-Python requirements
  "$PY" -c 'import mmcv.ops' || die "mmcv installed but mmcv.ops does not import; the error is above"
fi

# 4. The rest of the pinned OpenMMLab stack.
if have "${STACK[@]}"; then
  say "mmengine, mmdet, mmsegmentation and their extras already installed"
else
  say "installing ${STACK[*]}"
  "${PIP[@]}" install -q "${STACK[@]}"
fi

# 5. openmim, for `mim search / train / test mmelsa`. Without its dependencies on purpose: it
# requires opendatalab, which pins setuptools==60.2 and would break the mmcv build (mmcv needs
# setuptools<80, torch >=77); mim's search, train and test do not use it.
MIM=(openmim==0.3.9 Click colorama model-index pandas requests rich tabulate)
if have "${MIM[@]}"; then
  say "openmim already installed"
else
  say "installing openmim (without opendatalab) and its other requirements"
  # its requirements first: pip checks the environment after an install with dependencies and
  # would report openmim's missing opendatalab as an alarming but harmless ERROR
  "${PIP[@]}" install -q "${MIM[@]:1}"
  "${PIP[@]}" install -q --no-deps openmim==0.3.9
fi

# 5b. MMDeploy, for whole-model ONNX export (configs/mmdeploy/, mmelsa/deployment/). Without its
# dependencies on purpose: it pins protobuf<=3.20.2, which today's onnx / onnxscript do not
# import with, and grpcio serves only its remote-conversion server. Its obstacles on today's
# torch are handled in mmelsa/deployment/mmdeploy_compat.py.
MMDEPLOY=(mmdeploy==1.3.1 aenum multiprocess prettytable terminaltables)
if have "${MMDEPLOY[@]}"; then
  say "mmdeploy already installed"
else
  say "installing mmdeploy 1.3.1 (without its protobuf pin) and its other requirements"
  "${PIP[@]}" install -q "${MMDEPLOY[@]:1}"  # first, as for openmim
  "${PIP[@]}" install -q --no-deps mmdeploy==1.3.1
fi

# 5c. ImageNet classification (configs/elsa_swin_cls, configs/elsa_volo): mmpretrain 1.2.0 and timm
# (ELSA-VOLO is built on timm's VOLO), both without their dependencies (they would ask for
# another torch; what they import is listed). Both import torchvision, which must be the build
# made for the installed torch (step 2 installs the pair): checked by running one of its ops.
# MMELSA_SKIP_CLS=1 skips the step (detection and segmentation do not need it; the
# classification tests then fail).
CLS=(mmpretrain==1.2.0 timm==1.0.31 einops mat4py 'importlib-metadata<8.8' huggingface_hub
     safetensors)
torchvision_works() {
  "$PY" -c 'import torch, torchvision
b = torch.tensor([[0., 0., 2., 2.], [0., 0., 2., 2.1]])
assert torchvision.ops.nms(b, torch.tensor([1., .9]), .5).tolist() == [0]' 2>/dev/null
}
if [ -n "${MMELSA_SKIP_CLS:-}" ]; then
  say "MMELSA_SKIP_CLS set: mmpretrain and timm not installed"
elif have "${CLS[@]}" && torchvision_works; then
  say "mmpretrain, timm and a working torchvision already installed"
else
  if ! "$PY" -c 'import torchvision' 2>/dev/null; then
    # a torch kept from before: add the torchvision released with it (PyPI's builds pair with
    # PyPI's torch; a +cpu or other build of torch needs the torchvision of the same index)
    tv=$("$PY" -c 'import torch
print({"2.13": "0.28.0", "2.14": "0.29.1"}.get(".".join(torch.__version__.split(".")[:2]), ""))')
    [ -n "$tv" ] || die "no torchvision installed and none known for torch $("$PY" -c 'import torch; print(torch.__version__)'): install the torchvision built for your torch, or set MMELSA_SKIP_CLS=1"
    say "installing torchvision==$tv for the torch already installed"
    "${PIP[@]}" install -q --no-deps "torchvision==$tv"
  fi
  torchvision_works || die "torchvision $("$PY" -c 'import torchvision; print(torchvision.__version__)' 2>/dev/null) does not run its ops with torch $("$PY" -c 'import torch; print(torch.__version__)') (a wheel built for another torch build: e.g. PyPI's torchvision 0.28.0 beside torch 2.13.0+cpu); install the pair, e.g. TORCH_SPEC='torch==2.14.1 torchvision==0.29.1' in a new venv, or set MMELSA_SKIP_CLS=1"
  say "installing ${CLS[*]} (mmpretrain and timm without their dependencies)"
  "${PIP[@]}" install -q "${CLS[@]:2}"  # first, as for openmim
  "${PIP[@]}" install -q --no-deps "${CLS[@]:0:2}"
fi

# 6. mmelsa itself (development install). Rebuilt only when its sources or the torch it builds
# against change.
stamp="$VENV/.mmelsa-build-stamp"
fingerprint=$( { "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'; \
                 echo "FORCE_CUDA=${FORCE_CUDA:-} ARCH=${TORCH_CUDA_ARCH_LIST:-}"; \
                 echo develop; cat setup.py; find csrc -type f | sort | xargs cat; } | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] && "$PY" -c 'import mmelsa._ext' 2>/dev/null; then
  say "mmelsa extension up to date"
else
  say "building and installing mmelsa (development install)"
  t0=$SECONDS
  # A development install (`setup.py develop`, an egg-link to this checkout) rather than
  # `pip install -e .`: mim finds a package's configs and tools at <install location>/mmelsa/.mim,
  # and a PEP 660 editable install has its location in site-packages, where no mmelsa/ exists.
  # Whatever install was there before is removed first, so that only one is ever found.
  "${PIP[@]}" uninstall -q -y mmelsa 2>/dev/null || true
  MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -W ignore setup.py -q develop --no-deps \
    || die "mmelsa did not build; the compiler output above says why"
  echo "$fingerprint" > "$stamp"
  say "mmelsa build took $((SECONDS - t0)) s"
fi

say "checking the environment"
"$PY" - <<'PYEOF'
import torch, mmcv, mmcv.ops, mmengine, mmdet, mmseg, mmelsa
from mmelsa.ops import info
print('  torch %s | mmengine %s | mmcv %s | mmdet %s | mmseg %s | mmelsa %s' % (
    torch.__version__, mmengine.__version__, mmcv.__version__, mmdet.__version__,
    mmseg.__version__, mmelsa.__version__))
try:
    import mmpretrain, timm, torchvision
    print('  mmpretrain %s | timm %s | torchvision %s' % (
        mmpretrain.__version__, timm.__version__, torchvision.__version__))
except ImportError as err:
    print('  classification stack not installed (%s)' % err)
print('  mmelsa ops:', info())
PYEOF
trap - ERR
say "done in $((SECONDS - START)) s; activate with: source ${VENV#$ROOT/}/bin/activate"
