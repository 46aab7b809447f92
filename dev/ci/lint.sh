#!/usr/bin/env bash
# Lint and format check: ruff for Python (pyproject.toml [tool.ruff]), clang-format for the
# C++ / CUDA sources (.clang-format). Read-only; fix with `ruff check --fix .` and
# `clang-format -i FILE`. Run by tools/run_tests.sh, so by CI.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BIN="${MMELSA_VENV:-$ROOT/.venv}/bin"
rc=0
"$BIN/ruff" check --quiet . || { echo "[lint] ruff found problems (above)" >&2; rc=1; }
mapfile -t cxx < <(git ls-files 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh' 'csrc/*.h' \
                                 'tests/ops/cuda_emulation/*.cpp' 'tests/ops/cuda_emulation/*.h')
"$BIN/clang-format" --dry-run --Werror "${cxx[@]}" ||
  { echo "[lint] clang-format: the files above are not formatted (.clang-format)" >&2; rc=1; }
[ $rc -eq 0 ] && echo "[lint] ruff and clang-format: clean (${#cxx[@]} C++/CUDA files)"
exit $rc
