#!/usr/bin/env bash
# Fill .whl/ (ignored by git) with what the GPU machine, which has no network access, cannot
# download, so that dev/gpu/gpu_run.sh can install the OpenMMLab stack there (.whl/ travels
# with the working tree; dev/gpu/build_carry.sh calls this script and adds the compiled parts).
#
#   bash dev/gpu/prepare_carry.sh            # repeatable: what is already there is kept
#   CARRY_DIR=/path  PY312=/path/to/python3.12   # where to put it, which Python 3.12 resolves
#
# What it fetches (for CPython 3.12, manylinux x86-64, the GPU image's Python):
#   * wheels of mmengine 0.10.7, mmdet 3.3.0, mmsegmentation 1.2.2, pycocotools >= 2.0.8, ftfy,
#     and every requirement of theirs that the image lacks (the image's packages are listed in
#     dev/gpu/image_packages.txt). The closure is computed by pip's resolver for the target
#     platform (`pip install --dry-run --report`), not guessed;
#   * setuptools<80 (mmcv 2.1.0's setup.py imports pkg_resources; install_carry.sh installs it
#     only when the image's setuptools has none);
#   * the mmcv 2.1.0 sdist (no mmcv wheel exists for torch 2.11; build_carry.sh builds one here).
# Never torch or nvidia-* (the image has them) and never opencv-python: mmengine's metadata asks
# for it, but the image's opencv-python-headless provides the same cv2 module.
# What build_carry.sh adds (the mmcv wheel, prebuilt/, BUILT_FOR.txt) is kept.
#
# Writes .whl/MANIFEST.txt (file, bytes, sha256) and .whl/IMAGE_PROVIDED.txt (requirements left
# to the image, with the version pip would have picked), prints the total size and fails if it is
# over CARRY_MAX_MIB together with the working tree that travels beside it (default 60: at
# most 64 MiB travel to the GPU machine).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=${CARRY_DIR:-$ROOT/.whl}
MAX_MIB=${CARRY_MAX_MIB:-60}
IMAGE_LIST=$ROOT/dev/gpu/image_packages.txt
TOP=(mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 'pycocotools>=2.0.8' ftfy)
SETUPTOOLS_SPEC='setuptools<80'
MMCV_SDIST=mmcv-2.1.0.tar.gz
# From PyPI's simple index (sha256 recorded there); checked after every download.
MMCV_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
MMCV_URL=https://files.pythonhosted.org/packages/a7/19/f97f0fd4d432113a232e75f965335be6b7bb6557ae9faf8051e9a012cadd/$MMCV_SDIST

say() { printf '[prepare_carry %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[prepare_carry] FAILED: %s\n' "$*" >&2; exit 1; }

# A Python 3.12 to run pip with: its markers (python_version) then match the target's exactly.
if [ -z "${PY312:-}" ]; then
  for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    # (a pyenv shim exists on PATH even where it cannot run: try each one)
    if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
      PY312=$(command -v "$c"); break
    fi
  done
fi
[ -n "${PY312:-}" ] || die "no Python 3.12 found: set PY312=/path/to/python3.12 (pyenv install 3.12)"
"$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' \
  || die "$PY312 is not Python 3.12"
PIP=("$PY312" -m pip --disable-pip-version-check)
# pip, minus the warnings about this machine's local find-links folders that hold nothing here
pipq() { "${PIP[@]}" "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }

# The GPU image's glibc is at least 2.36 (its Python is 3.12.3, Ubuntu 24.04's, glibc 2.39);
# stop at 2.36 so the same wheels also install on this Debian 12 machine for the dry run.
PLATFORM_ARGS=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
               --abi abi3 --abi none --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for n in $(seq 17 36); do PLATFORM_ARGS+=(--platform "manylinux_2_${n}_x86_64"); done

mkdir -p "$DEST"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

say "resolving ${TOP[*]} for CPython 3.12 / manylinux x86-64 with $PY312"
pipq install -q --dry-run --ignore-installed --target "$TMP/target" \
  --report "$TMP/report.json" "${PLATFORM_ARGS[@]}" "${TOP[@]}" \
  || die "pip could not resolve the set (network? a version gone?)"

# Split the resolution into what to carry and what the image provides.
"$PY312" - "$TMP/report.json" "$IMAGE_LIST" "$TMP/carry.txt" "$DEST/IMAGE_PROVIDED.txt" <<'PY'
import json, re, sys
report, image_list, carry_out, provided_out = sys.argv[1:]
norm = lambda n: re.sub(r'[-_.]+', '-', n).lower()
image = set()
for line in open(image_list):
    if not line.startswith('#'):
        image.update(norm(w) for w in line.split())
# opencv-python: mmengine asks for it, the image's opencv-python-headless is the same cv2.
never = {'opencv-python'}
carry, provided = [], []
for item in json.load(open(report))['install']:
    meta = item['metadata']
    name, version = norm(meta['name']), meta['version']
    if name in image or name in never or name.startswith('nvidia-'):
        provided.append(f'{name}=={version}')
    else:
        carry.append(f'{name}=={version}')
open(carry_out, 'w').write('\n'.join(sorted(carry)) + '\n')
with open(provided_out, 'w') as f:
    f.write('# requirements left to the GPU image (pip picked these versions for a bare\n'
            '# Python 3.12; the image has its own, checked by `pip check` in gpu_run.sh)\n')
    f.write('\n'.join(sorted(provided)) + '\n')
PY
say "to carry: $(grep -c . "$TMP/carry.txt") wheels; left to the image: $(grep -vc '^#' "$DEST/IMAGE_PROVIDED.txt")"

# Download the wheels one by one, without dependencies (the closure is already in the list).
wanted=()
while read -r spec; do
  [ -n "$spec" ] || continue
  name=${spec%%==*}
  version=${spec#*==}
  # A wheel's file name uses the name with '-' replaced by '_' (PEP 427), case as published.
  pattern="${name//-/_}-${version}-*.whl"
  existing=$(find "$DEST" -maxdepth 1 -iname "$pattern" -print -quit)
  if [ -z "$existing" ]; then
    pipq download -q --no-deps "${PLATFORM_ARGS[@]}" -d "$DEST" "$spec" \
      || die "could not download $spec"
    existing=$(find "$DEST" -maxdepth 1 -iname "$pattern" -print -quit)
    [ -n "$existing" ] || die "downloaded $spec but found no $pattern in $DEST"
  fi
  wanted+=("$(basename "$existing")")
done < "$TMP/carry.txt"
# setuptools<80, for the mmcv build only if the image's setuptools has no pkg_resources.
existing=$(find "$DEST" -maxdepth 1 -name 'setuptools-79.*.whl' -print -quit)
if [ -z "$existing" ]; then
  pipq download -q --no-deps "${PLATFORM_ARGS[@]}" -d "$DEST" "$SETUPTOOLS_SPEC" \
    || die "could not download $SETUPTOOLS_SPEC"
  existing=$(find "$DEST" -maxdepth 1 -name 'setuptools-79.*.whl' -print -quit)
  [ -n "$existing" ] || die "pip did not fetch a setuptools 79.x wheel for $SETUPTOOLS_SPEC"
fi
wanted+=("$(basename "$existing")")

# The mmcv sdist: `pip download` would run its setup.py (which wants torch) to read metadata,
# so fetch the file itself and check it against the hash PyPI publishes.
if ! echo "$MMCV_SHA256  $DEST/$MMCV_SDIST" | sha256sum -c --status 2>/dev/null; then
  say "downloading $MMCV_SDIST"
  curl -fsSL --retry 3 -o "$DEST/$MMCV_SDIST" "$MMCV_URL" || die "could not download $MMCV_URL"
  echo "$MMCV_SHA256  $DEST/$MMCV_SDIST" | sha256sum -c --status || die "$MMCV_SDIST: wrong sha256"
fi
wanted+=("$MMCV_SDIST")

# Keep exactly one version of each: drop what an earlier run left that is not wanted now, except
# what build_carry.sh built.
for f in "$DEST"/*; do
  b=$(basename "$f")
  case $b in
    MANIFEST.txt | IMAGE_PROVIDED.txt | BUILT_FOR.txt | prebuilt | mmcv-2.1.0-cp312-cp312-*.whl*) continue ;;
  esac
  if ! printf '%s\n' "${wanted[@]}" | grep -qxF "$b"; then
    say "removing stale $b"
    rm -rf "$f"
  fi
done

(cd "$DEST" && for f in *.whl *.tar.gz; do
   [ -f "$f" ] && printf '%s %s %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
 done) > "$DEST/MANIFEST.txt"
say "contents of ${DEST#"$ROOT"/}:"
awk '{printf "  %-70s %8.1f KiB\n", $1, $2 / 1024}' "$DEST/MANIFEST.txt"
bytes=$(du -sb "$DEST" | cut -f1)
tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
say "$(awk -v b="$bytes" 'BEGIN{printf "%.1f MiB", b/1048576}') in ${DEST#"$ROOT"/}; the working tree that travels beside it: $(awk -v b="$tree" 'BEGIN{printf "%.1f MiB", b/1048576}') (limit 64 MiB together)"
[ $((bytes + tree)) -le $((MAX_MIB * 1048576)) ] \
  || die "${DEST#"$ROOT"/} and the working tree are over CARRY_MAX_MIB=$MAX_MIB MiB together"
