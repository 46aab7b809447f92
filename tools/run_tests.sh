#!/usr/bin/env bash
# The test command: set up (fast when already done), lint, compile-check the CUDA sources, run
# pytest.
#
#   bash tools/run_tests.sh [PYTEST_ARGS...]
#
# MMELSA_SKIP_CUDA_CHECK=1 skips the CUDA compile check. Exits non-zero if any part fails,
# including pytest collecting no tests (its exit code 5).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash tools/setup_env.sh || { echo "[tests] set-up failed: not running the tests" >&2; exit 1; }

lint_rc=0
bash dev/ci/lint.sh || lint_rc=$?

cuda_rc=0
if [ "${MMELSA_SKIP_CUDA_CHECK:-0}" = 1 ]; then
  echo "[tests] CUDA compile check skipped (MMELSA_SKIP_CUDA_CHECK=1)"
else
  bash dev/ci/check_cuda_build.sh || cuda_rc=$?
fi

"${MMELSA_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
pytest_rc=$?
[ $pytest_rc -eq 5 ] && echo "[tests] pytest collected no tests: that is a failure" >&2

if [ $lint_rc -ne 0 ] || [ $cuda_rc -ne 0 ] || [ $pytest_rc -ne 0 ]; then
  echo "[tests] FAILED (lint exit $lint_rc, CUDA compile check exit $cuda_rc," \
       "pytest exit $pytest_rc)" >&2
  exit 1
fi
echo "[tests] all passed"
