"""CPU-only distributed training (``--launcher pytorch`` without GPUs, e.g. the 2-process
test of the toy detector) with mmengine 0.10.7, whose defaults assume GPUs.

:class:`mmelsa.engine.SafeRunner` applies both functions in ``from_cfg``, so every tool that
builds it from a config (ours, mmdet's and mmseg's, ``mim train``) gets them.
"""
import os


def use_gloo_without_cuda(cfg):
    """Make a CPU-only distributed run (``--launcher pytorch`` without GPUs, e.g. the
    2-process test of the toy detector) work with mmengine 0.10.7, whose defaults assume GPUs:

    * the OpenMMLab runtimes default to NCCL, which needs GPUs: use gloo;
    * the Runner wraps the model in DDP with ``device_ids=[LOCAL_RANK]``, which DDP rejects
      for a CPU module: ask for ``device_ids=None`` through ``model_wrapper_cfg``;
    * mmengine's ``init_dist`` calls ``torch.cuda.set_device``, which a CPU build of torch
      lacks: :func:`init_cpu_process_group` creates the process group first (the Runner
      skips ``init_dist`` when one exists).
    """
    import torch
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


def init_cpu_process_group(cfg):
    """See :func:`use_gloo_without_cuda`; torchrun's env:// variables give rank and size."""
    import torch
    import torch.distributed as dist
    if cfg.get('launcher') != 'pytorch' or torch.cuda.is_available() or \
            dist.is_initialized():
        return
    dist.init_process_group(backend=cfg.env_cfg.dist_cfg.get('backend', 'gloo'),
                            rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']))
