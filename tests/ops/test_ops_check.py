"""``python -m mmelsa.ops.check``: it passes on correct operators and catches planted errors
(a wrong output, a wrong gradient, a result that differs between two runs)."""
import subprocess
import sys

import pytest
import torch

from mmelsa.ops import check


def verdict(capsys):
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.fixture
def no_cuda(monkeypatch):
    """The check as on a machine without CUDA, whatever this one has."""
    monkeypatch.setattr(check, '_cuda_state', lambda: (False, 'torch sees no CUDA device'))


def test_passes_on_the_cpu_and_says_cuda_was_not_run(no_cuda, capsys):
    assert check.main([]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith('PASS: ') and 'the CUDA part was NOT run' in last
    # every config, layout and op has its row with every dtype; no timing (the benchmark's job)
    for name in check.CONFIGS:
        for layout in ('NCHW', 'channels-last'):
            for op in ('plain', 'fused'):
                row = [r for r in out.splitlines() if r.startswith('| cpu | %s | %s | %s |' %
                                                                   (name, layout, op))]
                assert len(row) == 1 and row[0].count('|') == 9 and 'FAIL' not in row[0]
    assert 'Timing' not in out and ' ms ' not in out


def test_require_cuda_fails_without_it(no_cuda, monkeypatch, capsys):
    monkeypatch.setattr(check, 'check_device', lambda device, cache=None: [])
    assert check.main(['--require-cuda']) == 1
    assert verdict(capsys).startswith('FAIL: the CUDA part was not run: torch sees no CUDA')


def test_planted_wrong_output_fails_the_verdict(no_cuda, monkeypatch, capsys):
    """One output element off by 1e-3 of the scale, on channels-last inputs only."""
    real = check.elsa_attention

    def wrong(x, *args, **kwargs):
        out = real(x, *args, **kwargs)
        if x.stride(1) == 1:
            out = out.clone()
            out[0, 0, 0, 0] = out[0, 0, 0, 0] + 1e-3 * out.detach().abs().max()
        return out

    monkeypatch.setattr(check, 'elsa_attention', wrong)
    assert check.main([]) == 1
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith('FAIL: ') and ' out: error ' in last
    failed = [line for line in out.splitlines() if line.startswith('  cpu ')]
    assert failed and all(' channels-last ' in line and ' out: ' in line for line in failed)
    # fp64 and fp32 tolerances are far below 1e-3: each of their channels-last cases is caught
    assert sum(' fp64 out:' in line for line in failed) == len(check.CONFIGS) * 2


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward scales the gradient: a planted backward error."""

    @staticmethod
    def forward(ctx, t):
        return t.view_as(t)

    @staticmethod
    def backward(ctx, g):
        return g * 1.001


def test_planted_wrong_gradient_is_caught(monkeypatch):
    real = check.elsa_attention

    def wrong(x, attn, *args, attn_is_logits=False, **kwargs):
        if attn_is_logits:
            attn = _ScaleGrad.apply(attn)
        return real(x, attn, *args, attn_is_logits=attn_is_logits, **kwargs)

    monkeypatch.setattr(check, 'elsa_attention', wrong)
    for fused in (False, True):
        results = check.check_case('cpu', 'K3 d2', 'NCHW', fused, torch.float32)
        bad = [r.what for r in results if not r.ok]
        assert bad == (['grad attn'] if fused else [])


def test_planted_nondeterminism_is_caught(monkeypatch):
    """Noise far below the tolerance: only the bitwise rerun can see it."""
    real = check.elsa_attention

    def noisy(*args, **kwargs):
        out = real(*args, **kwargs)
        return out + 1e-9 * out.detach().abs().max() * torch.randn_like(out)

    monkeypatch.setattr(check, 'elsa_attention', noisy)
    results = check.check_case('cpu', 'K7 (tiled)', 'channels-last', True, torch.float32)
    assert [r.what for r in results if not r.ok] == ['bitwise rerun']


def test_a_raising_kernel_is_a_failed_check(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError('no kernel for this\nsecond line')

    monkeypatch.setattr(check, 'elsa_attention', broken)
    results = check.check_case('cpu', 'K5 s2', 'NCHW', False, torch.float16)
    assert len(results) == 1 and not results[0].ok
    assert results[0].detail == 'RuntimeError: no kernel for this'


def test_bad_argument_is_one_line():
    proc = subprocess.run([sys.executable, '-m', 'mmelsa.ops.check', '--device', 'gpu'],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "argument --device: invalid choice: 'gpu'" in proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.cuda
def test_cuda_check_passes(capsys):
    """On a CUDA machine: the whole check, CUDA part included."""
    assert check.main(['--require-cuda']) == 0
    last = verdict(capsys)
    assert last.startswith('PASS: ') and 'cpu and cuda' in last
