"""Rehearsal of the GPU run on a machine without a GPU (``gpu_run.sh --dry-run``).

Python imports this module at start-up when its folder is on PYTHONPATH; gpu_run.sh puts it
there only in a dry run, and only for the steps after the set-up. With
``MMELSA_DRYRUN_STOP_AT_CUDA=1`` torch then reports one CUDA device, and the first call that
would initialise CUDA (creating a CUDA tensor, synchronising, asking for the device's name)
ends the process with exit status 99 after printing where it was reached and how long the
step took until then. Everything before it (imports, argument parsing, configs, files, the CPU
part of a step) has run for real.
"""
import os
import sys
import time

if os.environ.get('MMELSA_DRYRUN_STOP_AT_CUDA') == '1':
    _T0 = time.time()
    import traceback

    import torch
    import torch.cuda

    def _stop(*args, **kwargs):
        here = [f for f in traceback.extract_stack()[:-1]
                if os.sep + 'torch' + os.sep not in f.filename]
        where = '%s:%d' % (here[-1].filename, here[-1].lineno) if here else '?'
        line = 'first CUDA call at %s after %.1f s' % (where, time.time() - _T0)
        sys.stdout.flush()
        sys.stderr.write('\nDRYRUN-STOP %s\n' % line)
        sys.stderr.flush()
        # also into a file: pytest's output capture would swallow the line above
        if os.environ.get('MMELSA_DRYRUN_STOP_FILE'):
            with open(os.environ['MMELSA_DRYRUN_STOP_FILE'], 'a') as f:
                f.write(line + '\n')
        os._exit(99)

    # torch's C++ side initialises CUDA through this Python function too (a CUDA tensor)
    torch.cuda._lazy_init = _stop
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
