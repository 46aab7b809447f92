"""mmengine 0.10.7 must save and load its own checkpoints on torch >= 2.6 (weights_only=True)."""
import pickle

import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

mmengine = pytest.importorskip('mmengine')
from mmengine.model import BaseModel  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmelsa  # noqa: E402,F401  (applies mmelsa.compat)


class TinyRegressor(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, targets, mode='tensor'):
        pred = self.linear(torch.stack(inputs) if isinstance(inputs, list) else inputs)
        if mode == 'loss':
            return dict(loss=((pred.squeeze(-1) - targets) ** 2).mean())
        return pred


class LineData(Dataset):

    def __len__(self):
        return 16

    def __getitem__(self, i):
        x = torch.arange(4, dtype=torch.float32) * (i + 1) / 16
        return dict(inputs=x, targets=x.sum())


def make_runner(work_dir, max_iters, resume=False):
    return Runner(
        model=TinyRegressor(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=LineData(), sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=4, num_workers=0),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        param_scheduler=dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=8),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        randomness=dict(seed=0),
        experiment_name=f'compat_{max_iters}_{resume}')


def test_plain_torch_load_refuses_mmengine_checkpoint(tmp_path):
    """The failure the compat patch exists for: torch's default unpickler rejects the file."""
    runner = make_runner(tmp_path, max_iters=3)
    runner.train()
    if torch.__version__ < '2.6':
        pytest.skip('weights_only is not the default before torch 2.6')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / 'iter_3.pth')


def test_mmengine_checkpoint_round_trip_and_resume(tmp_path):
    first = make_runner(tmp_path, max_iters=3)
    first.train()
    saved_weight = first.model.linear.weight.detach().clone()
    saved_lr = first.optim_wrapper.get_lr()['lr'][0]

    # test-style load: tools/test.py goes through the same loader
    ckpt = mmengine.runner.checkpoint._load_checkpoint(str(tmp_path / 'iter_3.pth'))
    assert ckpt['meta']['iter'] == 3
    torch.testing.assert_close(ckpt['state_dict']['linear.weight'], saved_weight)
    assert 'train/loss' in ckpt['message_hub']['log_scalars']

    # resume: the iteration counter, weights, optimizer and scheduler state come back
    second = make_runner(tmp_path, max_iters=6, resume=True)
    second.load_or_resume()
    assert second.iter == 3
    torch.testing.assert_close(second.model.linear.weight, saved_weight)
    assert second.optim_wrapper.get_lr()['lr'][0] == pytest.approx(saved_lr)
    state = second.optim_wrapper.optimizer.state_dict()['state']
    assert state and all(s['step'] == 3 for s in state.values())
    second.train()
    assert second.iter == 6
