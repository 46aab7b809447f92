"""Every CUDA kernel of the ELSA operators, checked without a GPU.

cuda_emulation/emulate_cuda_kernels.py (beside this file) compiles the CUDA launchers and kernels
(csrc/pytorch/cuda, csrc/common/cuda) as host C++ over a SIMT emulator (cuda_emulation/) and
compares their results, forward and backward, plain and fused softmax + ELSA, the tiled fast
path and the generic fallback, for float64 / float32 / float16 / bfloat16, with the float64
unfold reference. This runs it in CI. A second test plants index bugs in a copy of the kernels
and asserts that the same checks fail, so that this test is known to be able to fail. The
planted copy is built in a subprocess started as soon as this module's first test begins,
concurrently with the build of the real kernels.
"""
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tests', 'ops', 'cuda_emulation', 'emulate_cuda_kernels.py')

from tests.ops.cuda_emulation import emulate_cuda_kernels as emulation  # noqa: E402

KERNELS = osp.join('csrc', 'common', 'cuda', 'elsa_kernel.cuh')
LAUNCHERS = osp.join('csrc', 'pytorch', 'cuda', 'elsa_cuda.cu')
TILED = osp.join('csrc', 'common', 'cuda', 'elsa_tiled_kernel.cuh')
# bug number: (file, exact text in the kernels, its replacement when emu::planted_bug == N).
# Each anchor must occur exactly once: if the kernels change, update it here.
PLANTED = {
    # fused forward: the output column taken modulo the height (a transposed index)
    1: (KERNELS,
        'const int64_t o = idx % HoWo;  // idx = (b * G + g) * HoWo + o\n'
        '    const int64_t j = o % D.Wo, i = o / D.Wo;',
        'const int64_t o = idx % HoWo;  // idx = (b * G + g) * HoWo + o\n'
        '    const int64_t j = o % (emu::planted_bug == 1 ? D.Ho : D.Wo), i = o / D.Wo;'),
    # plain grad_x gather: the column's stride test made on the row
    2: (KERNELS, 'if (nx < 0 || nx % D.stride != 0) continue;',
        'if (nx < 0 || (emu::planted_bug == 2 ? ny : nx) % D.stride != 0) continue;'),
    # ghost reduction: the warp reduction starts at offset 8, dropping lanes 16-31
    3: (KERNELS, 'for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync',
        'for (int off = emu::planted_bug == 3 ? 8 : 16; off > 0; off >>= 1) '
        'v += __shfl_down_sync'),
    # fused launcher: launch geometry one pixel short
    4: (LAUNCHERS, 'const int64_t total = kLogits ? D.B * D.G * D.Ho * D.Wo : dst.numel();',
        'const int64_t total = kLogits ? D.B * D.G * D.Ho * D.Wo - (emu::planted_bug == 4) '
        ': dst.numel();'),
    # fused backward: the softmax backward's dot product misses the first tap
    5: (KERNELS, 'for (int64_t t = 0; t < KK; ++t) dot +=',
        'for (int64_t t = emu::planted_bug == 5; t < KK; ++t) dot +='),
    # tiled: the halo tile staged one column off
    6: (TILED, 'const int y = p.y0 + ty - kHalo, x = p.x0 + tx - kHalo;',
        'const int y = p.y0 + ty - kHalo, x = p.x0 + tx - kHalo + (emu::planted_bug == 6);'),
    # tiled grad_x: the gather's column taken with the row's tap
    7: (TILED, 'gs[p.r + 2 * kHalo - u][p.col + 2 * kHalo - v]',
        'gs[p.r + 2 * kHalo - u][p.col + 2 * kHalo - (emu::planted_bug == 7 ? u : v)]'),
    # tiled ghost reduction: the last row of every chunk dropped
    8: (TILED, 'min(int64_t(n_begin) + rows_per_chunk, int64_t(T.B) * T.H)',
        'min(int64_t(n_begin) + rows_per_chunk - (emu::planted_bug == 8), int64_t(T.B) * T.H)'),
    # tiled launch geometry: the last, partial row of tiles not launched
    9: (TILED, 'const int tiles_h = (T.H + kRows - 1) / kRows;',
        'const int tiles_h = (T.H + (emu::planted_bug == 9 ? 0 : kRows - 1)) / kRows;'),
    # tiled fused backward: the softmax backward's dot product misses the first tap
    10: (TILED, 'for (int t = 0; t < kKK; ++t) dot += prob[t] * g_at[t];',
         'for (int t = emu::planted_bug == 10; t < kKK; ++t) dot += prob[t] * g_at[t];'),
    # tiled forward, channels-last output: the row stride taken as the NCHW one (harmless on
    # NCHW maps, so only the channels-last cases can catch it)
    11: (TILED, 'out[p.b * O.b + c * O.c + p.i * O.h + p.j * O.w]',
         'out[p.b * O.b + c * O.c + p.i * (emu::planted_bug == 11 ? T.W : O.h) + p.j * O.w]'),
}


def _planted_tree(root):
    """A copy of csrc/ with every bug of PLANTED behind its runtime switch."""
    shutil.copytree(osp.join(REPO, 'csrc'), osp.join(root, 'csrc'))
    for path, old, new in PLANTED.values():
        full = osp.join(root, path)
        with open(full) as f:
            text = f.read()
        assert text.count(old) == 1, 'anchor of a planted bug not found once in %s: %r' % (
            path, old)
        with open(full, 'w') as f:
            f.write(text.replace(old, new))
    return root


@pytest.fixture(scope='module')
def planted(tmp_path_factory):
    """Starts building the planted copy in the background; yields (src, build_dir, process)."""
    root = _planted_tree(str(tmp_path_factory.mktemp('planted')))
    build_dir = osp.join(root, 'build')
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, '--src', root, '--build-dir', build_dir, '--name',
         'elsa_cuda_emulated_planted', '--build-only'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield root, build_dir, proc
    if proc.poll() is None:
        proc.kill()


@pytest.fixture(scope='module')
def emu(planted, tmp_path_factory):
    """The emulated kernels of this checkout (built in this process)."""
    return emulation.build(REPO, str(tmp_path_factory.mktemp('emu_build')))


@pytest.mark.parametrize('case', emulation.FULL_CASES, ids=str)
def test_emulated_kernels_match_reference(emu, case):
    """Forward and backward, plain and fused, every dtype, ghost and mask variants."""
    lines = []
    failures, n = emulation.run_checks(emu, [case], log=lines.append)
    assert n == 2 * len(emulation.DTYPES) + 1
    assert failures == 0, '\n'.join(lines)


def test_emulated_launch_count(emu):
    """The emulator really ran kernels (launch count grows); empty batches launch nothing."""
    before = emu.launches()
    x, a = torch.randn(1, 4, 5, 6), torch.randn(1, 2, 9, 5, 6)
    emu.softmax_backward(torch.randn(1, 4, 5, 6), x, a, None, torch.randn(4, 3, 3), 3, 1, 1,
                         [True] * 4)
    # probabilities, grad_x, grad_p, ghost partials, ghost final sum, softmax backward
    assert emu.launches() - before == 6
    before = emu.launches()
    emu.softmax_forward(x[:0], a[:0], None, None, 3, 1, 1)
    assert emu.launches() == before


def test_emulated_fast_path_choice(emu, monkeypatch):
    """The tiled kernels run exactly for K = 7, stride 1, dilation 1; launches per call."""
    x = torch.randn(1, 4, 9, 10)
    assert emu.fast_path(x, torch.randn(1, 2, 49, 9, 10), 7, 1, 1)
    assert not emu.fast_path(x, torch.randn(1, 2, 49, 9, 10), 7, 2, 1)  # dilation
    assert not emu.fast_path(x, torch.randn(1, 2, 49, 5, 5), 7, 1, 2)  # stride
    assert not emu.fast_path(x, torch.randn(1, 2, 25, 9, 10), 5, 1, 1)  # kernel size
    # the switch that lets the GPU benchmark time the generic kernels on the same inputs
    monkeypatch.setenv('MMELSA_CUDA_NO_TILED', '1')
    assert not emu.fast_path(x, torch.randn(1, 2, 49, 9, 10), 7, 1, 1)
    # switched off, channels-last inputs still give right results in the promised layouts
    # (generic kernels on NCHW copies, results copied into channels-last outputs)
    for fused in (False, True):
        errs, bad = emulation.check(emu, (2, 4, 2, 10, 9, 7, 1, 1), torch.float32, (True, True),
                                    [True] * 4, fused, nhwc=True)
        assert not bad and errs, (errs, bad)
    monkeypatch.setenv('MMELSA_CUDA_NO_TILED', '0')
    a, g, go = torch.randn(1, 2, 49, 9, 10), torch.randn(4, 7, 7), torch.randn(1, 4, 9, 10)
    before = emu.launches()
    emu.softmax_forward(x, a, g, g, 7, 1, 1)
    assert emu.launches() - before == 1
    # everything: probabilities (for grad_x), the tiled kernel, ghost partials, 2 final sums
    before = emu.launches()
    emu.softmax_backward(go, x, a, g, g, 7, 1, 1, [True] * 4)
    assert emu.launches() - before == 5
    # grad_logits alone: the tiled kernel recomputes its probabilities, no other launch
    before = emu.launches()
    emu.softmax_backward(go, x, a, g, g, 7, 1, 1, [False, True, False, False])
    assert emu.launches() - before == 1


def test_emulated_fast_path_refuses_32_bit_overflow(emu):
    """The tiled kernels index with int: maps past 2^31 elements or offsets go generic.

    Meta tensors carry sizes and strides without memory, so each limit is tried on both sides
    of its edge without allocating the gigabytes a real map that large would take.
    """
    def meta(size, stride=None):
        if stride is None:
            return torch.empty(size, device='meta')
        return torch.empty_strided(size, stride, device='meta')

    int_max = 2**31 - 1
    for hw, fits in ((4600, True), (4700, False)):  # 2 * 49 * hw * hw against 2^31 - 1
        assert (2 * 49 * hw * hw < int_max) == fits
        x = meta((1, 4, hw, hw))
        assert emu.fast_path(x, meta((1, 2, 49, hw, hw)), 7, 1, 1) == fits
        # an expanded attention map: every offset is 0, only its numel is past the limit (the
        # launchers allocate buffers of that numel after the check)
        expanded = meta((1, 2, 49, 1, 1)).expand(1, 2, 49, hw, hw)
        assert emu.fast_path(x, expanded, 7, 1, 1) == fits
    # few elements, but a batch stride that puts the last offset past the limit
    for batch_stride, fits in ((2**30, True), (2**31, False)):
        x = meta((2, 4, 9, 10), (batch_stride, 90, 10, 1))
        assert emu.fast_path(x, meta((2, 2, 49, 9, 10)), 7, 1, 1) == fits
    # the grid's y dimension (batch x groups) is limited to 65535 blocks
    for batch, fits in ((32767, True), (32768, False)):
        assert emu.fast_path(meta((batch, 4, 9, 10)), meta((batch, 2, 49, 9, 10)), 7, 1, 1) == fits


def test_python_mirror_of_the_cuda_layout_rule(emu):
    """mmelsa.ops.channels_last_path (the fake kernels' layouts) follows the C++ rule that the
    CUDA launchers use, for every layout and configuration."""
    from mmelsa.ops.elsa_attention import _cuda_channels_last
    x = torch.randn(1, 6, 9, 10)
    layouts = [x, x.contiguous(memory_format=torch.channels_last),
               x.contiguous(memory_format=torch.channels_last)[:, 1:5], x[:, :, :, 1:],
               torch.randn(1, 1, 9, 10).contiguous(memory_format=torch.channels_last)]
    seen = set()
    for t in layouts:
        for K, d, s in ((7, 1, 1), (7, 2, 1), (7, 1, 2), (5, 1, 1)):
            a = torch.randn(1, 1, K * K, (9 - 1) // s + 1, (10 - 1) // s + 1)
            rule = emu.cuda_nhwc(t, a, K, d, s)
            assert _cuda_channels_last(t, K, d, s) == rule, (t.stride(), K, d, s)
            seen.add(rule)
    assert seen == {True, False}


@pytest.mark.parametrize('bug', sorted(PLANTED))
def test_planted_bug_fails_the_checks(planted, bug):
    root, build_dir, proc = planted
    if proc.returncode is None:
        out, _ = proc.communicate(timeout=900)
        proc.build_output = out
    assert proc.returncode == 0, 'building the planted copy failed:\n' + proc.build_output
    run = subprocess.run(
        [sys.executable, SCRIPT, '--src', root, '--build-dir', build_dir, '--name',
         'elsa_cuda_emulated_planted', '--planted-bug', str(bug), '--stop-at-first'],
        capture_output=True, text=True, timeout=900)
    # a wrong value is reported as FAIL; an index bug may also crash the process (a signal)
    assert run.returncode != 0, 'planted bug %d was not caught:\n%s' % (bug, run.stdout)
    assert 'FAIL' in run.stdout or run.returncode < 0, run.stdout + run.stderr


def test_planted_copy_without_bug_passes(planted):
    """The control: the patched copy with every bug switched off passes the same checks, so
    the failures above come from the bugs, not from the patching."""
    root, build_dir, proc = planted
    if proc.returncode is None:
        proc.communicate(timeout=900)
    assert proc.returncode == 0
    run = subprocess.run(
        [sys.executable, SCRIPT, '--src', root, '--build-dir', build_dir, '--name',
         'elsa_cuda_emulated_planted', '--planted-bug', '0', '--max-cases', '3'],
        capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
