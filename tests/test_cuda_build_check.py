"""The CUDA compile check (dev/ci/check_cuda_build.sh) must fail on a broken .cu file.

It runs the real script on a copy of the sources with one planted device-code error.
Needs nvcc and a CUDA build of torch: this venv's (what tools/setup_env.sh installs) or
$MMELSA_CUDA_VENV's; skipped where they are absent (a developer machine without nvcc).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'dev' / 'ci' / 'check_cuda_build.sh'
CUDA_VENV = Path(os.environ.get('MMELSA_CUDA_VENV', sys.prefix))


@pytest.mark.slow
def test_cuda_check_fails_on_a_planted_compile_error(tmp_path):
    import torch
    cuda_torch = torch.version.cuda is not None if CUDA_VENV == Path(sys.prefix) else \
        (CUDA_VENV / 'bin' / 'python').exists()
    if shutil.which('nvcc') is None or not cuda_torch:
        pytest.skip('needs nvcc and a CUDA build of torch (MMELSA_CUDA_VENV)')
    cu_files = sorted((ROOT / 'csrc').rglob('*.cu'))
    assert cu_files, 'no CUDA sources to check'

    tree = tmp_path / 'tree'
    shutil.copytree(ROOT / 'csrc', tree / 'csrc')
    (tree / 'mmelsa').mkdir()
    shutil.copy(ROOT / 'mmelsa' / 'version.py', tree / 'mmelsa' / 'version.py')
    shutil.copy(ROOT / 'setup.py', tree / 'setup.py')
    broken = tree / cu_files[0].relative_to(ROOT)
    with open(broken, 'a') as f:
        f.write('\n__global__ void planted_kernel(float* p) { p[0] = planted_undefined_name; }\n')

    env = dict(os.environ, MMELSA_CUDA_VENV=str(CUDA_VENV), BUILD_DIR=str(tmp_path / 'build'))
    proc = subprocess.run(['bash', str(SCRIPT), str(tree)], env=env, capture_output=True,
                          text=True, timeout=1800)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert 'planted_undefined_name' in output
    assert '[cuda-check] FAILED' in output
