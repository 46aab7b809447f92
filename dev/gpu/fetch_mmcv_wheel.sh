#!/usr/bin/env bash
# Put the mmcv wheel that gpu_run.sh built on the GPU machine into .whl/, so that the next run
# call (carry [".whl"]) installs it in seconds instead of building mmcv for minutes.
#
#   bash dev/gpu/fetch_mmcv_wheel.sh FILES_AT    # FILES_AT: the folder the run reply names
#
# gpu_run.sh sends the wheel back in pieces (<= 15 MiB each, under the tool's 16 MiB per file)
# and writes its size and sha256 into summary.txt; this joins the pieces and checks both.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC=${1:?usage: fetch_mmcv_wheel.sh FILES_AT (the run reply\'s files_at folder)}
DEST=${CARRY_DIR:-$ROOT/.whl}
NAME=mmcv-2.1.0-cp312-cp312-linux_x86_64.whl

line=$(grep -h "^mmcv_wheel $NAME " "$SRC"/summary.txt "$SRC"/*/summary.txt 2>/dev/null | tail -1 || true)
[ -n "$line" ] || { echo "no 'mmcv_wheel' line in $SRC/summary.txt: that call built no mmcv wheel" >&2; exit 1; }
sha=$(echo "$line" | sed -n 's/.* sha256=\([0-9a-f]*\).*/\1/p')
bytes=$(echo "$line" | sed -n 's/.* bytes=\([0-9]*\).*/\1/p')
mapfile -t parts < <(find "$SRC" -maxdepth 2 -name "$NAME.part*" | sort)
[ ${#parts[@]} -gt 0 ] || { echo "no $NAME.part* under $SRC" >&2; exit 1; }
mkdir -p "$DEST"
cat "${parts[@]}" > "$DEST/$NAME.tmp"
[ "$(stat -c %s "$DEST/$NAME.tmp")" = "$bytes" ] || { echo "size differs from $bytes" >&2; exit 1; }
echo "$sha  $DEST/$NAME.tmp" | sha256sum -c --status || { echo "sha256 differs" >&2; exit 1; }
mv "$DEST/$NAME.tmp" "$DEST/$NAME"
echo "$DEST/$NAME: $bytes bytes, sha256 ok (from ${#parts[@]} pieces); carry .whl in the next call"
du -sh "$DEST"
