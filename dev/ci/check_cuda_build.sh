#!/usr/bin/env bash
# Compile mmelsa's CUDA sources on a machine without a GPU, so that a broken .cu file is caught
# before any GPU sees it.
#
#   bash dev/ci/check_cuda_build.sh [SOURCE_TREE]
#
# Builds the extension with FORCE_CUDA=1 against a CUDA build of torch and the machine's nvcc,
# then imports the result with that torch to prove it links. The torch is the project venv's
# when it is a CUDA build (tools/setup_env.sh installs PyPI's torch 2.14.1, CUDA 13), else one
# installed once into its own venv, .venv-cuda ($TORCH_CUDA_SPEC, ~5.5 GB), so that a CPU-only
# environment is left untouched; MMELSA_CUDA_VENV names another. SOURCE_TREE defaults to this checkout (tests point
# it at a copy with a planted error). Object files are kept in $BUILD_DIR (default
# build-cuda-check/), so later runs recompile only what changed.
# Without nvcc it says so and skips, except under CI (CI=true), where it fails.
set -eEuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC=$(cd "${1:-$ROOT}" && pwd)
is_cuda_torch() { "$1/bin/python" -c 'import torch, sys; sys.exit(torch.version.cuda is None)' 2>/dev/null; }
if [ -n "${MMELSA_CUDA_VENV:-}" ]; then VENV=$MMELSA_CUDA_VENV
elif is_cuda_torch "${MMELSA_VENV:-$ROOT/.venv}"; then VENV=${MMELSA_VENV:-$ROOT/.venv}
else VENV=$ROOT/.venv-cuda; fi
BUILD_DIR=${BUILD_DIR:-$SRC/build-cuda-check}
TORCH_CUDA_SPEC=${TORCH_CUDA_SPEC:-torch==2.14.1}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
START=$SECONDS

say() { printf '[cuda-check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[cuda-check] FAILED: %s\n' "$*" >&2; exit 1; }
trap 'die "step \"$BASH_COMMAND\" exited with an error (line $LINENO)"' ERR

if ! command -v nvcc >/dev/null; then
  [ "${CI:-}" = true ] && die "nvcc is not on PATH: the CUDA compile check cannot run"
  say "skipped: nvcc is not on PATH"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV for the CUDA build of torch"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! is_cuda_torch "$VENV"; then
  say "installing $TORCH_CUDA_SPEC (a CUDA build, ~5.5 GB; first run only)"
  "$PY" -m pip install -q --disable-pip-version-check "$TORCH_CUDA_SPEC" 'setuptools<80' wheel ninja numpy
fi
say "torch $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)'), $(nvcc --version | tail -1), arch $TORCH_CUDA_ARCH_LIST"

# nvcc on PATH may be a wrapper (here /usr/local/bin/nvcc), from which torch would guess
# CUDA_HOME=/usr/local and miss lib64/libcudart. Prefer the toolkit's standard folder.
if [ -z "${CUDA_HOME:-}" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then CUDA_HOME=/usr/local/cuda
  else CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")"); fi
fi
export CUDA_HOME
# The machine's toolkit is nvcc and the runtime only; the headers that torch's CUDA headers
# include (cusparse.h, cublas_v2.h, ...) come with the nvidia-* wheels that torch installed.
nvidia_include=$("$PY" -c 'import glob, os, nvidia; print(":".join(d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "include"))))' 2>/dev/null || true)
export CPATH="${nvidia_include}${CPATH:+:$CPATH}"

cd "$SRC"
n_cu=$(find csrc -name '*.cu' | wc -l)
n_cpp=$(find csrc -name '*.cpp' | wc -l)
say "compiling $n_cu CUDA and $n_cpp C++ sources into $BUILD_DIR"
FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" setup.py -q build_ext \
  --build-temp "$BUILD_DIR/temp" --build-lib "$BUILD_DIR/lib" \
  || die "the CUDA build failed; the compiler output above says where"

so=$(ls "$BUILD_DIR"/lib/mmelsa/_ext*.so)
"$PY" - "$so" <<'PYEOF' || die "the CUDA extension was built but does not load or lacks CUDA"
import importlib.util, sys
import torch
spec = importlib.util.spec_from_file_location('mmelsa._ext', sys.argv[1])
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)
assert ext.with_cuda(), 'extension reports it was built without CUDA'
print('[cuda-check] loaded %s: with_cuda=%s, CUDA %s' % (sys.argv[1], ext.with_cuda(), ext.cuda_version()))
PYEOF
trap - ERR
say "passed in $((SECONDS - START)) s"
