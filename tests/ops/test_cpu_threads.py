"""The CPU kernels use the threads torch is given: the extension is built with OpenMP, so the
``at::parallel_for`` that torch's headers inline into its kernels runs in parallel (built without
it, the loop ran on one thread whatever ``torch.set_num_threads`` said, and no test noticed)."""
import torch

import mmelsa.ops  # noqa: F401  (loads the extension)
from mmelsa import _ext


def test_parallel_for_in_the_extension_follows_torch_set_num_threads():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert _ext.parallel_for_threads(256) == 2
        torch.set_num_threads(1)  # the counter can say 1: what a build without OpenMP gives
        assert _ext.parallel_for_threads(256) == 1
    finally:
        torch.set_num_threads(before)
