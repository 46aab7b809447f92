"""Timing, bandwidth and peak-memory helpers shared by the benchmark scripts
(tools/analysis_tools, dev/gpu) and the ONNX latency comparison (mmelsa.deployment).

Memory:
* CUDA: ``torch.cuda.max_memory_allocated()`` minus the memory allocated before the call.
* CPU: the growth of the process's peak resident set (VmHWM) during one call, after resetting the
  peak (``/proc/self/clear_refs``, Linux) and setting glibc's mmap threshold to 64 KiB, so every
  tensor buffer is its own mapping that is returned to the OS when freed: the figure is the
  memory that was actually touched at the peak of the call, allocator caching excluded.
"""
import ctypes
import gc
import os.path as osp
import statistics
import time

import torch


class CpuPeak:
    """Peak resident-set growth of this process during a call (Linux; NaN elsewhere)."""

    def __init__(self):
        self.ok = osp.exists('/proc/self/clear_refs')
        self._libc = None
        if self.ok:
            try:
                self._libc = ctypes.CDLL('libc.so.6')
                self._libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD = 64 KiB
            except OSError:
                self.ok = False

    @staticmethod
    def _status(key):
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    def measure(self, fn):
        if not self.ok:
            fn()
            return float('nan')
        gc.collect()
        # Hand the heap's free pages back to the OS: memory freed by earlier calls (made before
        # the threshold above, or reused chunks) would otherwise be reused without raising
        # the RSS, and the call would look as if it needed nothing.
        self._libc.malloc_trim(0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset VmHWM to the current RSS
        base = self._status('VmRSS')
        fn()
        return self._status('VmHWM') - base


def cuda_peak(fn):
    """Bytes allocated at the peak of ``fn()`` beyond what was allocated before it."""
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def peak_memory(fn, device, cpu_peak=None):
    """Peak extra bytes of one ``fn()`` on ``device`` ('cpu' or 'cuda')."""
    if device == 'cuda':
        return cuda_peak(fn)
    return (cpu_peak or CpuPeak()).measure(fn)


def time_fn(fn, device, reps, warmup):
    """Median milliseconds of ``fn()`` after ``warmup`` calls (CUDA events on the GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    if device == 'cuda':
        torch.cuda.synchronize()
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def time_interleaved(fns, reps, warmup=2, device='cpu'):
    """Median milliseconds of each callable, called in turn within every round (a, b, c, a, b,
    c, ...) after ``warmup`` rounds: load changes on a shared machine hit them all alike, which
    timing one after the other does not. Wall clock; on CUDA each call is synchronised."""
    return [statistics.median(t) for t in interleaved_times(fns, reps, warmup, device)]


def interleaved_times(fns, reps, warmup=2, device='cpu'):
    """The milliseconds of every round of :func:`time_interleaved`, one list per callable (the
    i-th entries of two lists were measured next to each other: a pair)."""
    def call(fn):
        t0 = time.perf_counter()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3

    for _ in range(warmup):
        for fn in fns:
            call(fn)
    times = [[] for _ in fns]
    for _ in range(reps):
        for k, fn in enumerate(fns):
            times[k].append(call(fn))
    return times


def copy_bandwidth(device='cuda'):
    """GB/s of a device-to-device copy on ``device``, bytes read + written, 1 GiB buffers: the
    memory ceiling the operator's benchmarks set their floors against."""
    n = (1 << 30) // 4
    a = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
    b = torch.empty_like(a)
    ms = time_fn(lambda: b.copy_(a), device, reps=20, warmup=3)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def ratio(num, den, fmt='%.2f'):
    """``num / den`` formatted, or 'n/a' where the denominator measured nothing.

    A tiny run's CPU peak can be 0 bytes (its buffers fit in pages the process already held),
    and a platform without /proc gives NaN: a table row then says so instead of crashing.
    """
    if not den or den != den:  # zero or NaN
        return 'n/a'
    return fmt % (num / den)
