"""Every CUDA kernel of the ELSA operators, checked without a GPU.

cuda_emulation/emulate_cuda_kernels.py (beside this file) compiles the CUDA launchers and kernels
(csrc/pytorch/cuda, csrc/common/cuda) as host C++ over a SIMT emulator (cuda_emulation/) and
compares their results, forward and backward, plain and fused softmax + ELSA, the tiled fast
path and the generic fallback, for float64 / float32 / float16 / bfloat16, shared and
per-sample ghosts, with the float64 unfold reference. This runs it in CI. A second test
switches on, one at a time, the bugs planted in the emulator's copy of the kernels
(cuda_emulation/plants.py: the kernels in csrc/ hold only the correct expressions) and asserts
that the same checks fail, so that this test is known to be able to fail.
"""
import glob
import os.path as osp
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tests', 'ops', 'cuda_emulation', 'emulate_cuda_kernels.py')

from tests.ops.cuda_emulation import emulate_cuda_kernels as emulation  # noqa: E402
from tests.ops.cuda_emulation import plants  # noqa: E402

# bug number -> what it breaks; the emulated build switches bug n on for --planted-bug n
PLANTED = {bug: p.what for bug, p in plants.PLANTS.items()}


@pytest.fixture(scope='module')
def build_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('emu_build'))


@pytest.fixture(scope='module')
def emu(build_dir):
    """The emulated kernels of this checkout (built in this process)."""
    return emulation.build(REPO, build_dir)


def _run_emulator(build_dir, *args):
    """The emulation script in a process of its own (a planted index bug may crash it), on the
    build of the emu fixture."""
    return subprocess.run([sys.executable, SCRIPT, '--build-dir', build_dir, *args],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize('case', emulation.FULL_CASES, ids=str)
def test_emulated_kernels_match_reference(emu, case):
    """Forward and backward, plain and fused, every dtype, ghost and mask variants."""
    lines = []
    failures, n = emulation.run_checks(emu, [case], log=lines.append)
    assert n == 2 * len(emulation.DTYPES) + 1
    assert failures == 0, '\n'.join(lines)


@pytest.mark.parametrize('case', emulation.SAMPLE_CASES, ids=str)
def test_emulated_per_sample_ghosts_match_reference(emu, case):
    """Per-sample ghosts (B, C, K, K), alone (DDF) and mixed with shared ones: forward and
    backward, plain and fused, the gradient of a per-sample ghost per sample."""
    lines = []
    failures, n = emulation.run_sample_checks(emu, [case], log=lines.append)
    assert n == 2 * len(emulation.SAMPLE_GHOSTS)
    assert failures == 0, '\n'.join(lines)


def test_emulated_per_sample_ghost_reduction_over_many_chunks(emu):
    """Per-sample ghost gradients when a sample's positions fill several chunks of the
    generic reduction and several row chunks of the tiled one (the cases above fit one)."""
    for case in ((2, 2, 1, 70, 66, 3, 1, 1), (2, 2, 1, 40, 9, 7, 1, 1)):
        for ghosts in (('sample', True), (True, 'sample')):
            errs, bad = emulation.check(emu, case, torch.float32, ghosts,
                                        [False, False, True, True], fused=False)
            assert not bad and errs, (case, ghosts, errs, bad)


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
    from mmelsa.ops.layout import cuda_channels_last
    x = torch.randn(1, 6, 9, 10)
    layouts = [x, x.contiguous(memory_format=torch.channels_last),
               x.contiguous(memory_format=torch.channels_last)[:, 1:5], x[:, :, :, 1:],
               torch.randn(1, 1, 9, 10).contiguous(memory_format=torch.channels_last)]
    seen = set()
    for t in layouts:
        for K, d, s in ((7, 1, 1), (7, 2, 1), (7, 1, 2), (5, 1, 1)):
            a = torch.randn(1, 1, K * K, (9 - 1) // s + 1, (10 - 1) // s + 1)
            rule = emu.cuda_nhwc(t, a, K, d, s)
            assert cuda_channels_last(t, K, d, s) == rule, (t.stride(), K, d, s)
            seen.add(rule)
    assert seen == {True, False}


def test_every_planted_bug_has_one_place(tmp_path):
    """Each planted bug's place is found exactly once in this tree's kernels and becomes one
    switch in the emulator's copy of csrc/, which differs from csrc/ nowhere else; so a kernel
    edit that moves a place is named here rather than reported as an uncaught bug."""
    copy = plants.plant_tree(REPO, str(tmp_path))
    switches = {bug: 'ELSA_PLANT(%d, %s, %s)' % (bug, p.good, p.bad)
                for bug, p in plants.PLANTS.items()}
    seen = []
    for path in glob.glob(osp.join(REPO, 'csrc', '**', '*'), recursive=True):
        if not osp.isfile(path):
            continue
        with open(path) as f:
            text = f.read()
        with open(osp.join(copy, osp.relpath(path, osp.join(REPO, 'csrc')))) as f:
            planted = f.read()
        assert 'ELSA_PLANT' not in text, path  # the kernels carry no planting machinery
        for bug, switch in switches.items():
            seen += [bug] * planted.count(switch)
            planted = planted.replace(switch, plants.PLANTS[bug].good)
        assert planted == text, path
    assert sorted(seen) == sorted(plants.PLANTS)


def test_a_lost_plant_place_fails_the_build():
    """A kernel edit that removes or duplicates a planted bug's place stops the build, naming
    the bug, instead of planting nothing."""
    p = plants.PLANTS[9]
    with open(osp.join(REPO, p.path)) as f:
        text = f.read()
    edited = text.replace(p.context, p.context.replace(p.good, '(%s)' % p.good))
    with pytest.raises(plants.PlantError, match=r'planted bug 9 .*occurs 0 times'):
        plants.plant_file(p.path, edited)
    with pytest.raises(plants.PlantError, match=r'planted bug 9 .*occurs 2 times'):
        plants.plant_file(p.path, text + p.context)


@pytest.mark.parametrize('bug', sorted(PLANTED))
def test_planted_bug_fails_the_checks(emu, build_dir, bug):
    run = _run_emulator(build_dir, '--planted-bug', str(bug), '--stop-at-first')
    # a wrong value is reported as FAIL; an index bug may also crash the process (a signal)
    assert run.returncode != 0, 'planted bug %d (%s) was not caught:\n%s' % (
        bug, PLANTED[bug], run.stdout)
    assert 'FAIL' in run.stdout or run.returncode < 0, run.stdout + run.stderr


def test_planted_bugs_switched_off_pass(emu, build_dir):
    """The control: the same process-per-run harness with every bug switched off passes the
    same checks, so the failures above come from the bugs, not from the harness."""
    run = _run_emulator(build_dir, '--planted-bug', '0', '--max-cases', '3')
    assert run.returncode == 0, run.stdout + run.stderr
