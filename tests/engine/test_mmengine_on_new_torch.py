"""mmengine 0.10.7 must save and load its own checkpoints on torch >= 2.6 (weights_only=True)."""
import pickle

import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

import mmengine  # a dependency: a missing mmengine fails these tests, never skips them
from mmengine.model import BaseModel  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmelsa  # noqa: E402  (importing it installs mmelsa.engine.patches)


class TinyRegressor(BaseModel):

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():  # the same start for every runner of a test
            torch.manual_seed(0)
            self.linear = nn.Linear(4, 1)

    def forward(self, inputs, targets, mode='tensor'):
        pred = self.linear(inputs)
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
        train_dataloader=dict(dataset=LineData(),
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=4, num_workers=0,
                              collate_fn=dict(type='default_collate')),
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
    # test-style load: tools/test.py goes through the same loader as resume
    first = make_runner(tmp_path / 'interrupted', max_iters=3)
    first.train()
    ckpt = mmengine.runner.checkpoint._load_checkpoint(
        str(tmp_path / 'interrupted' / 'iter_3.pth'))
    assert ckpt['meta']['iter'] == 3
    torch.testing.assert_close(ckpt['state_dict']['linear.weight'], first.model.linear.weight)
    assert 'train/loss' in ckpt['message_hub']['log_scalars']
    # ...and it loads as untrusted bytes through the gate (plain data, HistoryBuffers kept)
    path = tmp_path / 'interrupted' / 'iter_3.pth'
    strict = mmelsa.checkpoint.load_bytes(path.read_bytes(), str(path), trusted=False)
    assert strict['meta']['iter'] == 3
    assert strict['message_hub']['log_scalars']['train/loss'].mean() == pytest.approx(
        ckpt['message_hub']['log_scalars']['train/loss'].mean())

    # resume: continuing from iter 3 to 6 must give exactly what an uninterrupted run gives,
    # which needs the iteration counter, weights, optimizer and scheduler state all restored
    resumed = make_runner(tmp_path / 'interrupted', max_iters=6, resume=True)
    resumed.train()
    straight = make_runner(tmp_path / 'straight', max_iters=6)
    straight.train()
    assert resumed.iter == straight.iter == 6
    states = resumed.optim_wrapper.optimizer.state_dict()['state'].values()
    adam_steps = [s['step'] for s in states]
    assert adam_steps and all(int(step) == 6 for step in adam_steps)
    assert resumed.optim_wrapper.get_lr()['lr'][0] == pytest.approx(
        straight.optim_wrapper.get_lr()['lr'][0])
    torch.testing.assert_close(resumed.model.linear.weight, straight.model.linear.weight)
    torch.testing.assert_close(resumed.model.linear.bias, straight.model.linear.bias)


class _ReachesForInit:
    """Pickles as getattr(HistoryBuffer, '__init__'): more than a statistics method."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return getattr, (HistoryBuffer, '__init__')


def test_restricted_getattr_refuses_other_attributes(tmp_path):
    path = tmp_path / 'foreign.pth'
    torch.save({'x': _ReachesForInit()}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"\['x'\] is getattr\(.*'__init__'\)"):
        mmelsa.checkpoint.read_checkpoint_file(path)


def test_yaml_files_build_plain_data_only(tmp_path):
    """mmengine reads .yaml configs and annotations with PyYAML's full Loader, which runs what
    a file names (failed before: the marker file was created); mmengine's own dumps, tuples
    included, still load."""
    import yaml
    from mmengine import Config
    marker = tmp_path / 'code_ran'
    evil = tmp_path / 'evil.yaml'
    evil.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(yaml.constructor.ConstructorError, match='python/object/apply'):
        Config.fromfile(str(evil))
    with pytest.raises(yaml.constructor.ConstructorError):
        mmengine.load(str(evil))
    assert not marker.exists()
    cfg = Config(dict(a=(1, 2), b=dict(c=[1, (3, 4)]), d=None, e='x'))
    cfg.dump(str(tmp_path / 'dumped.yaml'))
    assert Config.fromfile(str(tmp_path / 'dumped.yaml')).to_dict() == cfg.to_dict()
    assert isinstance(mmengine.load(str(tmp_path / 'dumped.yaml'))['b']['c'][1], tuple)
