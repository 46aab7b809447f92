#!/usr/bin/env bash
# Set up mmelsa on a machine that has never seen it, or bring an existing set-up up to date.
#
#   bash tools/setup_env.sh
#
# Makes a virtual environment in the checkout (.venv, or $MMELSA_VENV) and installs:
#   torch (torch==2.13.0 unless $TORCH_SPEC says otherwise; a torch already in the venv is kept),
#   mmcv 2.1.0 built from source with its ops (the slow step: ~20 min on 2 cores the first time,
#   pip's wheel cache makes later installs take seconds), mmengine 0.10.7, mmdet 3.3.0,
#   mmsegmentation 1.2.2 and what they need on numpy 2, openmim (for `mim`), mmpretrain 1.2.0, timm
#   and the torchvision of the installed torch (classification; MMELSA_SKIP_CLS=1 skips it), then
#   mmelsa itself
#   (a development install: edits in the checkout take effect without reinstalling).
# Idempotent: each step first checks whether its result is already there.
# On a CUDA machine set FORCE_CUDA=1 (and TORCH_CUDA_ARCH_LIST) to build the CUDA kernels of mmcv
# and mmelsa; see README.md.
set -eEuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMELSA_VENV:-$ROOT/.venv}
BASE_PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
MMCV_VERSION=2.1.0
STACK=(mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 'pycocotools>=2.0.8' ftfy regex pytest
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

# 1. Build tools. setuptools<80: mmcv 2.1.0's setup.py still imports pkg_resources. Checked again
# before the mmcv build: on a fresh venv a later install was seen to bring setuptools 84.
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
  say "installing $TORCH_SPEC"
  "${PIP[@]}" install -q "$TORCH_SPEC"
fi

# 3. mmcv with its compiled ops, from source (PyPI has no wheel for today's torch).
if have "mmcv==$MMCV_VERSION" && "$PY" -c 'import mmcv.ops' 2>/dev/null; then
  say "mmcv $MMCV_VERSION with ops already installed"
else
  ensure_build_tools
  say "building mmcv $MMCV_VERSION with ops from source (about 20 min on 2 cores the first time; seconds when pip's wheel cache has it)"
  t0=$SECONDS
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" install --no-build-isolation "mmcv==$MMCV_VERSION" \
    || die "mmcv $MMCV_VERSION did not build; the compiler output above says why"
  if ! "$PY" -c 'import mmcv.ops' 2>/dev/null; then
    # pip's wheel cache does not key on the torch version: a wheel cached for another torch
    # installs fine and then fails to load. Build it afresh for this torch.
    say "the installed mmcv.ops does not load with this torch (a cached wheel built for another torch?): rebuilding without pip's cache"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" install --no-build-isolation \
      --no-cache-dir --force-reinstall --no-deps "mmcv==$MMCV_VERSION" \
      || die "mmcv $MMCV_VERSION did not build; the compiler output above says why"
  fi
  say "mmcv build/install took $((SECONDS - t0)) s"
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
  "${PIP[@]}" install -q --no-deps openmim==0.3.9
  "${PIP[@]}" install -q "${MIM[@]:1}"
fi

# 5b. ImageNet classification (configs/elsa_swin_cls, configs/elsa_volo): mmpretrain 1.2.0 and timm
# (ELSA-VOLO is built on timm's VOLO), and a torchvision built for the installed torch: both
# import it, and a torchvision wheel made for another build of the same torch version installs
# and then fails on its own ops ("operator torchvision::nms does not exist"), e.g. PyPI's (CUDA)
# torchvision 0.28.0 beside torch 2.13.0+cpu. The pairing: torch 2.13 -> torchvision 0.28.0,
# 2.14 -> 0.29.1; a +cpu torch takes the +cpu torchvision of PyTorch's CPU wheel index, a PyPI
# (CUDA) torch takes PyPI's. mmpretrain and timm without their dependencies (they would ask for
# another torch); what they import is listed. MMELSA_SKIP_CLS=1 skips the step (detection and
# segmentation do not need it; the classification tests then fail).
CLS=(mmpretrain==1.2.0 timm==1.0.31 einops mat4py 'importlib-metadata<8.8' huggingface_hub
     safetensors)
TORCHVISION_INDEX=${TORCHVISION_INDEX:-https://download.pytorch.org/whl/cpu}
torchvision_works() {
  "$PY" -c 'import torch, torchvision
b = torch.tensor([[0., 0., 2., 2.], [0., 0., 2., 2.1]])
assert torchvision.ops.nms(b, torch.tensor([1., .9]), .5).tolist() == [0]' 2>/dev/null
}
if [ -n "${MMELSA_SKIP_CLS:-}" ]; then
  say "MMELSA_SKIP_CLS set: mmpretrain, timm and torchvision not installed"
elif have "${CLS[@]}" && torchvision_works; then
  say "mmpretrain, timm and a working torchvision already installed"
else
  if ! torchvision_works; then
    tv_spec=$("$PY" -c 'import torch
v = torch.__version__
tv = {"2.13": "0.28.0", "2.14": "0.29.1"}.get(".".join(v.split("+")[0].split(".")[:2]))
print("" if tv is None else "torchvision==" + tv + ("+cpu" if v.endswith("+cpu") else ""))')
    [ -n "$tv_spec" ] || die "no known torchvision for torch $("$PY" -c 'import torch; print(torch.__version__)'): install the torchvision of your torch build by hand, or set MMELSA_SKIP_CLS=1"
    say "installing $tv_spec (the build that matches torch $("$PY" -c 'import torch; print(torch.__version__)'))"
    if [[ $tv_spec == *+cpu ]]; then
      "${PIP[@]}" install -q --no-deps "$tv_spec" --index-url "$TORCHVISION_INDEX" \
        || die "could not install $tv_spec from $TORCHVISION_INDEX (PyPI has no +cpu torchvision); set TORCHVISION_INDEX to a mirror of it, or MMELSA_SKIP_CLS=1"
    else
      "${PIP[@]}" install -q --no-deps "$tv_spec"
    fi
    torchvision_works || die "$tv_spec is installed but torchvision.ops.nms fails with this torch (a wheel built for another torch build); see the error of: $PY -c 'import torchvision'"
  fi
  say "installing ${CLS[*]} (mmpretrain and timm without their dependencies)"
  "${PIP[@]}" install -q --no-deps "${CLS[@]:0:2}"
  "${PIP[@]}" install -q "${CLS[@]:2}"
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
