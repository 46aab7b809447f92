"""SafeRunner: a checkpoint that does not fit the model is an error (unless a partial load is
asked for), and a new run never overwrites the checkpoints of an earlier one."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from mmelsa.checkpoint import CheckpointMismatchError
from mmelsa.engine import WorkDirNotEmptyError
from tests.engine.tiny_training import TinyELSARegressor, make_runner

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOY_SEG = 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py'


@pytest.fixture
def other_model_ckpt(tmp_path):
    """A checkpoint of another model: a wider backbone (wrong shapes) and a different head."""
    model = TinyELSARegressor(width=16)
    model.extra = nn.Linear(2, 2)
    path = tmp_path / 'other.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def test_load_from_another_model_is_an_error(other_model_ckpt, tmp_path):
    runner = make_runner(tmp_path / 'w', 1, load_from=str(other_model_ckpt))
    with pytest.raises(CheckpointMismatchError) as info:
        runner.load_or_resume()
    msg = str(info.value)
    assert str(other_model_ckpt) in msg and 'extra.weight' in msg and 'wrong shape' in msg
    assert '--allow-partial-load' in msg and '\n' not in msg


def test_allow_partial_load_loads_what_fits(other_model_ckpt, tmp_path):
    runner = make_runner(tmp_path / 'w', 1, load_from=str(other_model_ckpt),
                         allow_partial_load=True)
    runner.load_or_resume()
    saved = torch.load(other_model_ckpt)['state_dict']
    own = runner.model.state_dict()
    fitting = [k for k in own if k in saved and saved[k].shape == own[k].shape]
    assert fitting  # e.g. the Swin stage's relative position tables (width-independent)
    for k in fitting:
        torch.testing.assert_close(own[k], saved[k], rtol=0, atol=0)


def test_a_fitting_checkpoint_loads(tmp_path):
    first = make_runner(tmp_path / 'a', 1)
    first.train()
    runner = make_runner(tmp_path / 'b', 1, load_from=str(tmp_path / 'a' / 'iter_1.pth'))
    runner.load_or_resume()
    for k, v in first.model.state_dict().items():
        torch.testing.assert_close(runner.model.state_dict()[k], v, rtol=0, atol=0)


def test_no_silent_overwrite_of_an_earlier_run(tmp_path):
    make_runner(tmp_path, 2).train()
    before = (tmp_path / 'iter_2.pth').read_bytes()
    with pytest.raises(WorkDirNotEmptyError) as info:
        make_runner(tmp_path, 2).train()
    msg = str(info.value)
    assert all(s in msg for s in ('--resume', '--work-dir', '--overwrite', 'iter_2.pth'))
    assert (tmp_path / 'iter_2.pth').read_bytes() == before
    make_runner(tmp_path, 3, resume=True).train()  # resuming is allowed
    make_runner(tmp_path, 1, overwrite_checkpoints=True).train()  # so is an explicit overwrite


def test_no_silent_overwrite_in_a_checkpoint_out_dir(tmp_path):
    """CheckpointHook(out_dir=...) saves into out_dir/<work dir name>: that folder is checked
    too (failed before: only the work dir was, and the earlier run's files were replaced)."""
    out_dir = tmp_path / 'ckpts'
    make_runner(tmp_path / 'a' / 'exp', 2, checkpoint=dict(out_dir=str(out_dir))).train()
    saved = out_dir / 'exp' / 'iter_2.pth'
    before = saved.read_bytes()
    with pytest.raises(WorkDirNotEmptyError, match=str(out_dir / 'exp')):
        make_runner(tmp_path / 'b' / 'exp', 2, checkpoint=dict(out_dir=str(out_dir))).train()
    assert saved.read_bytes() == before


def _tool(args):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONPATH=REPO))


def test_test_tool_refuses_a_checkpoint_of_another_model(other_model_ckpt, tmp_path, toy_root):
    """Today's failure: exit 0 and an mAP / mIoU of random weights."""
    from tests.tools.conftest import toy_data_options
    res = _tool(['tools/test.py', TOY_SEG, str(other_model_ckpt), '--work-dir',
                 str(tmp_path / 'w'), '--cfg-options', *toy_data_options('seg', toy_root)])
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith('error: checkpoint') and 'does not fit' in last, last
    assert 'mmelsa-metrics' not in res.stdout  # no metrics of random weights


def test_train_tool_refuses_to_overwrite(tmp_path, toy_root):
    from tests.tools.conftest import toy_data_options
    work = tmp_path / 'w'
    work.mkdir()
    (work / 'iter_5.pth').write_bytes(b'an earlier run')
    res = _tool(['tools/train.py', TOY_SEG, '--work-dir', str(work), '--cfg-options',
                 'train_cfg.max_iters=1', *toy_data_options('seg', toy_root)])
    assert res.returncode == 2, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert '--resume' in last and '--overwrite' in last and 'iter_5.pth' in last, last
    assert (work / 'iter_5.pth').read_bytes() == b'an earlier run'


def test_mmdet_own_test_tool_refuses_too(other_model_ckpt, tmp_path, toy_root):
    """mmdet's installed tools/test.py builds the SafeRunner our configs select."""
    import mmdet
    from tests.tools.conftest import toy_data_options
    tool = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'test.py')
    det = 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py'
    res = _tool([tool, det, str(other_model_ckpt), '--work-dir', str(tmp_path / 'w'),
                 '--cfg-options', *toy_data_options('det', toy_root)])
    assert res.returncode != 0, res.stdout[-3000:]
    assert 'CheckpointMismatchError' in res.stderr and 'does not fit' in res.stderr, \
        res.stderr[-3000:]
    assert 'coco/bbox_mAP' not in res.stdout


def test_mmdet_own_train_tool_resumes_with_the_uninterrupted_lr(tmp_path, toy_root):
    """mmdet's installed tools/train.py builds SafeRunner from our toy config, so a run
    interrupted after epoch 1 and resumed ends epoch 2 with the learning rate of a run that was
    never interrupted (mmengine 0.10.7 alone re-applies the warm-up factor on resume)."""
    import mmdet
    from tests.tools.conftest import toy_data_options
    tool = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    det = 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py'

    def train(work, epochs, *extra):
        # 24 images, batch 4: 6 iterations an epoch, inside the 25-iteration warm-up
        res = _tool([tool, det, '--work-dir', str(work), *extra, '--cfg-options',
                     f'train_cfg.max_epochs={epochs}', 'train_cfg.val_interval=100',
                     'train_dataloader.batch_size=4', *toy_data_options('det', toy_root)])
        assert res.returncode == 0, res.stderr[-3000:]

    train(tmp_path / 'straight', 2)
    train(tmp_path / 'resumed', 1)
    train(tmp_path / 'resumed', 2, '--resume')

    def lrs(work):
        ckpt = torch.load(work / 'epoch_2.pth', map_location='cpu', weights_only=False)
        assert ckpt['meta']['iter'] == 12
        return [g['lr'] for g in ckpt['optimizer']['param_groups']]

    straight, resumed = lrs(tmp_path / 'straight'), lrs(tmp_path / 'resumed')
    assert resumed == pytest.approx(straight, rel=1e-6)


def test_mmdet_train_tool_is_told_the_option_it_has(tmp_path, toy_root):
    """mmdet's own tools/train.py has no --overwrite: the refusal names the config option that
    works under it, and that option lets the second run through."""
    import os
    import subprocess
    import sys

    import mmdet

    from tests.tools.conftest import REPO, toy_data_options
    tool = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    seg = 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py'
    opts = ['train_cfg.max_iters=1', 'train_cfg.val_interval=100', 'custom_hooks=[]',
            'default_hooks.checkpoint.interval=1', *toy_data_options('seg', toy_root)]

    def train(*extra):
        return subprocess.run(
            [sys.executable, tool, seg, '--work-dir', str(tmp_path), '--cfg-options', *opts,
             *extra], cwd=REPO, capture_output=True, text=True, timeout=600,
            env=dict(os.environ, PYTHONPATH=REPO))

    assert train().returncode == 0
    again = train()
    assert again.returncode != 0
    assert '--cfg-options overwrite_checkpoints=True' in again.stderr, again.stderr[-2000:]
    assert train('overwrite_checkpoints=True').returncode == 0
