"""A real mmengine training run, small enough to start many times in one test: a reduced
ELSA-Swin with a linear head, fitted to a fixed random regression target on 32x32 inputs."""
import uuid

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from mmelsa.engine import SafeRunner
from mmelsa.models import ELSASwinTransformer


class TinyELSARegressor(BaseModel):
    """ELSA-Swin (2 stages, 8 channels) -> global average pool -> Linear(16, 1)."""

    def __init__(self, width=8):
        super().__init__()
        with torch.random.fork_rng():  # the same start for every run of a test
            torch.manual_seed(0)
            self.backbone = ELSASwinTransformer(
                embed_dims=width, depths=(1, 1), num_heads=(1, 2), group_width=4,
                elsa_kernel_size=3, window_size=4, strides=(4, 2), out_indices=(1, ),
                elsa_stages=(0, ))
            self.head = nn.Linear(2 * width, 1)

    def forward(self, inputs, targets, mode='tensor'):
        feat = self.backbone(inputs)[-1].mean(dim=(2, 3))
        pred = self.head(feat).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((pred - targets)**2).mean())
        return pred


class RandomImages(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(3, 32, 32, generator=g)
        return dict(inputs=x, targets=x.mean())


def make_runner(work_dir, max_iters, resume=False, max_keep_ckpts=-1, model=None,
                custom_hooks=None, load_from=None, checkpoint=None, runner_class=SafeRunner,
                **cfg):
    """A SafeRunner (or ``runner_class``) that checkpoints every iteration (iter_N.pth;
    ``checkpoint``: more CheckpointHook arguments)."""
    return runner_class(
        model=model or TinyELSARegressor(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=RandomImages(),
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=4, num_workers=0,
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        param_scheduler=dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False,
                            max_keep_ckpts=max_keep_ckpts, **(checkpoint or {})),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=custom_hooks,
        load_from=load_from,
        resume=resume,
        randomness=dict(seed=0),
        cfg=dict(**cfg) if cfg else None,
        experiment_name=f'tiny_{uuid.uuid4().hex[:12]}')
