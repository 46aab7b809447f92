#!/usr/bin/env bash
# Build here, on a machine without a GPU, everything that the GPU machine would otherwise have to
# compile, for that machine's Python 3.12 and torch 2.11.0 (CUDA 13.0), Hopper (sm_90) only:
#   * the mmcv 2.1.0 wheel WITH its CUDA ops (MMCV_WITH_OPS=1 FORCE_CUDA=1; ~40 min of 2 cores,
#     longer at nice 19),
#   * mmelsa's extension with its CUDA kernels (mmelsa/_ext.cpython-312-*.so),
# both with their debug symbols stripped, into .whl/ beside the pure-Python wheels of
# prepare_carry.sh, and writes .whl/BUILT_FOR.txt (what they were built for and from) so that
# gpu_run.sh can tell whether they fit the GPU machine. Nothing of it is committed (.whl/ and
# build/ are ignored).
#
#   nice -n 19 bash dev/gpu/build_carry.sh [STEP...]   # default: venv wheels mmelsa mmcv manifest
#   nohup nice -n 19 bash dev/gpu/build_carry.sh > build/carry/build.log 2>&1 &   # background
#
# Steps (each is skipped when its output is there and matches its inputs, so a rerun after a
# kill continues; FORCE=1 redoes them):
#   venv      BUILD_DIR/venv312: Python 3.12 (PY312, or found as prepare_carry.sh finds it) with
#             torch==$TORCH_SPEC (PyPI's Linux wheel of torch 2.11.0 is the CUDA 13.0 build, the
#             GPU image's), setuptools<80 (mmcv's setup.py imports pkg_resources), wheel, ninja
#   wheels    prepare_carry.sh: the pure-Python wheels and the mmcv sdist
#   mmelsa    the extension, FORCE_CUDA=1, into .whl/prebuilt/mmelsa/
#   mmcv      the mmcv wheel, into .whl/
#   manifest  .whl/BUILT_FOR.txt, .whl/MANIFEST.txt and the size check (CARRY_MAX_MIB, default
#             60, for .whl/ and the working tree together: what travels with the GPU command
#             is at most 64 MiB)
# Knobs: BUILD_DIR (build/carry), CARRY_DIR (.whl), MAX_JOBS (nproc), TORCH_CUDA_ARCH_LIST (9.0),
#   CUDA_HOME (/usr/local/cuda when it holds bin/nvcc).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build/carry}
DEST=${CARRY_DIR:-$ROOT/.whl}
TORCH_SPEC=${TORCH_SPEC:-torch==2.11.0}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
FORCE=${FORCE:-0}
STEPS=${*:-venv wheels mmelsa mmcv manifest}
MMCV_WHEEL=mmcv-2.1.0-cp312-cp312-linux_x86_64.whl
START=$SECONDS

say() { printf '[build_carry %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[build_carry] FAILED: %s\n' "$*" >&2; exit 1; }
mkdir -p "$BUILD" "$DEST"
VPY=$BUILD/venv312/bin/python

# nvcc on PATH may be a wrapper (/usr/local/bin/nvcc) from which torch would guess a CUDA_HOME
# without lib64/; prefer the toolkit's own folder.
if [ -z "${CUDA_HOME:-}" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then CUDA_HOME=/usr/local/cuda
  elif command -v nvcc >/dev/null; then
    CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  fi
fi
export CUDA_HOME=${CUDA_HOME:-}

cuda_env() {  # the headers torch's CUDA headers include (cublas_v2.h, ...) come with nvidia-*
  local inc
  inc=$("$VPY" -c 'import glob, os, nvidia; print(":".join(d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "include"))))' 2>/dev/null || true)
  export CPATH="${inc}${CPATH:+:$CPATH}"
  # -g0 after Python's own "-g": the C++ objects carry no debug information (smaller, faster)
  export CFLAGS="${CFLAGS:+$CFLAGS }-g0" CXXFLAGS="${CXXFLAGS:+$CXXFLAGS }-g0"
  [ -n "$CUDA_HOME" ] && [ -x "$CUDA_HOME/bin/nvcc" ] || die "no CUDA toolkit (nvcc): set CUDA_HOME"
}

src_hash() {  # what the mmelsa extension is built from: csrc/ and setup.py
  (cd "$ROOT" && find csrc setup.py -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

step_venv() {
  if [ "$FORCE" != 1 ] && "$VPY" -c "
import sys, torch, setuptools, wheel, ninja
from pkg_resources import parse_version
assert sys.version_info[:2] == (3, 12) and torch.version.cuda, 'wrong python/torch'
assert torch.__version__.split('+')[0] == '${TORCH_SPEC#torch==}'" 2>/dev/null; then
    say "venv: $("$VPY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)') (kept)"
    return
  fi
  local py=${PY312:-}
  if [ -z "$py" ]; then
    for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
      if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
        py=$(command -v "$c"); break
      fi
    done
  fi
  [ -n "$py" ] || die "no Python 3.12 found: set PY312=/path/to/python3.12"
  [ -x "$VPY" ] || "$py" -m venv "$BUILD/venv312"
  say "venv: installing $TORCH_SPEC (CUDA build, a few GB with its nvidia-* wheels), setuptools<80, wheel, ninja, numpy"
  "$VPY" -m pip install -q --disable-pip-version-check "$TORCH_SPEC" 'setuptools<80' wheel ninja \
    numpy || die "could not install $TORCH_SPEC into $BUILD/venv312"
  "$VPY" -c 'import torch; assert torch.version.cuda, "this torch is a CPU build"' \
    || die "$TORCH_SPEC installed without CUDA"
}

step_wheels() { PY312=$VPY CARRY_DIR=$DEST CARRY_MAX_MIB=1000 bash "$ROOT/dev/gpu/prepare_carry.sh"; }

step_mmelsa() {
  local so_dir=$DEST/prebuilt/mmelsa hash so t0
  hash=$(src_hash)
  if [ "$FORCE" != 1 ] && [ -f "$so_dir/SOURCE_HASH" ] && [ "$(cat "$so_dir/SOURCE_HASH")" = "$hash" ]; then
    say "mmelsa: extension for sources $hash already built (kept)"
    return
  fi
  cuda_env
  say "mmelsa: building the CPU + CUDA extension (arch $TORCH_CUDA_ARCH_LIST, MAX_JOBS=$MAX_JOBS)"
  t0=$SECONDS
  rm -rf "$BUILD/mmelsa-lib"
  (cd "$ROOT" && FORCE_CUDA=1 "$VPY" setup.py -q build_ext --build-temp "$BUILD/mmelsa-temp" \
     --build-lib "$BUILD/mmelsa-lib") || die "the mmelsa CUDA build failed (compiler output above)"
  so=$(ls "$BUILD"/mmelsa-lib/mmelsa/_ext.cpython-312-*.so)
  strip --strip-debug "$so"
  "$VPY" - "$so" <<'PY' || die "the extension was built but does not load or lacks CUDA"
import importlib.util, sys
import torch  # noqa: F401  (the extension links against it)
spec = importlib.util.spec_from_file_location('mmelsa._ext', sys.argv[1])
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)
assert ext.with_cuda(), 'built without CUDA'
print('  loads: with_cuda=%s, CUDA %s' % (ext.with_cuda(), ext.cuda_version()))
PY
  rm -rf "$so_dir" && mkdir -p "$so_dir"
  cp "$so" "$so_dir/"
  echo "$hash" > "$so_dir/SOURCE_HASH"
  say "mmelsa: $(basename "$so") $(du -h "$so" | cut -f1) in $((SECONDS - t0)) s"
}

heavy_first() {  # SETUP_PY: compile mmcv's slowest sources first (order only; same wheel)
  # ninja starts the compile statements about in the order of the sources, and mmcv lists its
  # .cpp files first; a few .cu files take minutes, and started last they would finish alone.
  "$VPY" - "$1" <<'PY' || echo "(mmcv setup.py left as it is)"
import sys
path = sys.argv[1]
src = open(path).read()
helper = """

def _heavy_first(files):  # added by mmelsa's dev/gpu/build_carry.sh: compile order only
    heavy = ['filtered_lrelu.cu', 'cudabind.cpp', 'upfirdn2d_kernel.cu', 'bias_act_cuda.cu',
             'ms_deform_attn_cuda.cu']
    def key(f):
        name = f.replace(chr(92), '/').rsplit('/', 1)[-1]
        return (heavy.index(name) if name in heavy else len(heavy), not f.endswith('.cu'), f)
    return sorted(files, key=key)
"""
n = src.count('sources=op_files,')
if n and '_heavy_first' not in src and 'def get_extensions():' in src:
    src = src.replace('sources=op_files,', 'sources=_heavy_first(op_files),')
    src = src.replace('\ndef get_extensions():', helper + '\n\ndef get_extensions():', 1)
    open(path, 'w').write(src)
print('mmcv setup.py: longest sources compile first (%d places)' % n)
PY
}

mmcv_check() {  # the wheel's extension loads with this torch and was built with CUDA
  # Loaded by itself: importing the mmcv package would need mmengine, which this venv lacks
  # (the dry run imports the whole package).
  rm -rf "$BUILD/mmcv-check" && mkdir -p "$BUILD/mmcv-check"
  (cd "$BUILD/mmcv-check" && "$VPY" -m wheel unpack "$DEST/$MMCV_WHEEL" >/dev/null) \
    || die "cannot unpack $DEST/$MMCV_WHEEL"
  "$VPY" - "$BUILD"/mmcv-check/mmcv-2.1.0/mmcv/_ext*.so <<'PY' || die "the mmcv wheel's _ext does not load here"
import importlib.util, sys
import torch  # noqa: F401  (the extension links against it)
spec = importlib.util.spec_from_file_location('mmcv._ext', sys.argv[1])
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)
cuda = ext.get_compiling_cuda_version()
print('  mmcv._ext loads: compiled with %s, CUDA %s; nms: %s, roi_align_forward: %s' % (
    ext.get_compiler_version(), cuda, hasattr(ext, 'nms'), hasattr(ext, 'roi_align_forward')))
assert cuda != 'not available', 'mmcv was built without CUDA'
PY
  rm -rf "$BUILD/mmcv-check"
}

step_mmcv() {
  local sdist=$DEST/mmcv-2.1.0.tar.gz src=$BUILD/mmcv-src/mmcv-2.1.0 t0 whl
  if [ "$FORCE" != 1 ] && [ -f "$DEST/$MMCV_WHEEL" ] && [ -f "$DEST/$MMCV_WHEEL.built_for" ] \
     && [ "$(cat "$DEST/$MMCV_WHEEL.built_for")" = "$(torch_tag)" ]; then
    say "mmcv: $MMCV_WHEEL for $(torch_tag) already built (kept)"
    mmcv_check
    return
  fi
  [ -f "$sdist" ] || die "no $sdist: run the wheels step first"
  cuda_env
  # Object files are kept in build/ (not in the sources): a rerun after a kill recompiles only
  # what was not finished.
  if [ ! -f "$src/setup.py" ]; then
    mkdir -p "$BUILD/mmcv-src" && tar xzf "$sdist" -C "$BUILD/mmcv-src"
  fi
  heavy_first "$src/setup.py"
  say "mmcv: building the wheel with CUDA ops (arch $TORCH_CUDA_ARCH_LIST, MAX_JOBS=$MAX_JOBS); ~40 min of 2 cores"
  t0=$SECONDS
  rm -rf "$BUILD/mmcv-dist"
  (cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA=1 "$VPY" setup.py -q bdist_wheel \
     -d "$BUILD/mmcv-dist") || die "the mmcv build failed (compiler output above)"
  whl=$(ls "$BUILD"/mmcv-dist/mmcv-2.1.0-*.whl)
  say "mmcv: built $(basename "$whl") ($(du -h "$whl" | cut -f1)) in $((SECONDS - t0)) s; stripping"
  # strip the extension inside the wheel; `wheel pack` writes a new RECORD (hashes, sizes)
  rm -rf "$BUILD/mmcv-unpacked" && mkdir -p "$BUILD/mmcv-unpacked"
  "$VPY" -m wheel unpack -d "$BUILD/mmcv-unpacked" "$whl" >/dev/null
  find "$BUILD/mmcv-unpacked" -name '*.so' -exec strip --strip-debug {} +
  rm -f "$DEST"/mmcv-2.1.0-*.whl
  "$VPY" -m wheel pack -d "$DEST" "$BUILD"/mmcv-unpacked/mmcv-2.1.0 >/dev/null
  [ -f "$DEST/$MMCV_WHEEL" ] || die "wheel pack wrote no $DEST/$MMCV_WHEEL"
  torch_tag > "$DEST/$MMCV_WHEEL.built_for"
  mmcv_check
  say "mmcv: $MMCV_WHEEL $(du -h "$DEST/$MMCV_WHEEL" | cut -f1) after stripping"
}

torch_tag() {  # what a binary built here needs on the GPU machine
  "$VPY" -c 'import sys, torch; print("python=%d.%d torch=%s cuda=%s" % (sys.version_info[:2] + (torch.__version__, torch.version.cuda)))'
}

step_manifest() {
  {
    echo "# what the prebuilt binaries in this folder were built for (build_carry.sh)"
    torch_tag
    echo "arch=$TORCH_CUDA_ARCH_LIST"
    echo "nvcc=$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
    echo "mmelsa_sources=$(cat "$DEST/prebuilt/mmelsa/SOURCE_HASH" 2>/dev/null || echo none)"
    echo "mmcv_wheel=$([ -f "$DEST/$MMCV_WHEEL" ] && echo "$MMCV_WHEEL" || echo none)"
    echo "built=$(date -u +%FT%TZ)"
  } > "$DEST/BUILT_FOR.txt"
  cat "$DEST/BUILT_FOR.txt"
  (cd "$DEST" && find . -type f ! -name MANIFEST.txt -printf '%P\n' | sort | while read -r f; do
     printf '%s %s %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
   done) > "$DEST/MANIFEST.txt"
  local bytes tree
  bytes=$(du -sb "$DEST" | cut -f1)
  tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  say "carry: $(awk -v b="$bytes" 'BEGIN{printf "%.1f MiB", b/1048576}') in .whl/ + $(awk -v b="$tree" 'BEGIN{printf "%.1f MiB", b/1048576}') working tree = $(awk -v b=$((bytes + tree)) 'BEGIN{printf "%.1f MiB", b/1048576}') (limit 64 MiB)"
  awk '{printf "  %-72s %8.1f KiB\n", $1, $2 / 1024}' "$DEST/MANIFEST.txt" | sort -k2 -n -r | head -12
  [ $((bytes + tree)) -le $((${CARRY_MAX_MIB:-60} * 1048576)) ] \
    || die ".whl/ and the working tree are over CARRY_MAX_MIB=${CARRY_MAX_MIB:-60} MiB together"
}

for s in $STEPS; do
  case $s in
    venv | wheels | mmelsa | mmcv | manifest) ;;
    *) die "unknown step '$s' (steps: venv wheels mmelsa mmcv manifest)" ;;
  esac
done
for s in $STEPS; do
  t=$SECONDS
  say "=== $s"
  "step_$s"
  say "=== $s done in $((SECONDS - t)) s"
done
say "all done in $((SECONDS - START)) s"
