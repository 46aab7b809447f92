"""A kill at any point of a checkpoint save costs no checkpoint, and --resume continues from
the newest intact one (with and without max_keep_ckpts=1). The runs are real training runs of
a reduced ELSA-Swin; tests/engine/kill_during_save.py forks and kills them."""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

from mmelsa.engine import atomic_write, checkpoint_problem, find_latest_intact_checkpoint
from tests.engine.tiny_training import make_runner

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _step(name):
    return int(re.match(r'iter_(\d+)\.pth$', name).group(1))


@pytest.mark.parametrize('max_keep', [-1, 1])
def test_kill_during_saves_then_resume(tmp_path, max_keep):
    res = subprocess.run(
        [sys.executable, '-m', 'tests.engine.kill_during_save', str(tmp_path), str(max_keep),
         '10'], cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode == 0, res.stderr[-4000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    kinds = {kind for _, kind, _ in report['clean_steps']}
    assert {'write', 'fsync', 'rename'} <= kinds, kinds  # the save is atomic
    runs = report['runs']
    assert len(runs) >= 8
    # the kills cover the checkpoint files, the last_checkpoint pointer and the removals
    touched = {run['kill_at'][2] for run in runs}
    assert any('last_checkpoint' in n for n in touched), touched
    if max_keep == 1:
        assert any(run['kill_at'][1] == 'remove' for run in runs)
    for run in runs:
        n, kind, name = run['kill_at']
        where = f'kill at step {n} ({kind} {name})'
        assert run['ended'] == 'killed', where
        intact = run['intact_after_kill']
        assert intact, f'{where}: no intact checkpoint left'
        # iteration 1 finished saving before every kill point (they start with iteration 2)
        if max_keep == -1:
            assert 'iter_1.pth' in intact, (where, intact)
        newest = max(_step(f) for f in intact)
        ended, resumed = run['resume']
        assert ended == 'exit 0', (where, resumed)
        assert resumed['resumed_at'] == newest, (where, resumed, intact)
        assert resumed['final_iter'] == 3, (where, resumed)
        assert 'iter_3.pth' in run['intact_at_end'], (where, run['intact_at_end'])


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    torch.save({'w': torch.ones(2)}, path)

    def broken(f):
        f.write(b'PK\x03\x04 half a zip')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), broken)
    assert torch.equal(torch.load(path)['w'], torch.ones(2))
    assert os.listdir(tmp_path) == ['epoch_1.pth']  # no temporary file left behind


def test_resume_skips_damaged_newest_checkpoint(tmp_path):
    """A truncated newest checkpoint and an empty last_checkpoint (what mmengine 0.10.7 can
    leave after a kill) resume from the newest intact file, with a warning."""
    for i in (1, 2, 3):
        torch.save({'state_dict': {'w': torch.full((4, ), float(i))}}, tmp_path / f'epoch_{i}.pth')
    data = (tmp_path / 'epoch_3.pth').read_bytes()
    (tmp_path / 'epoch_3.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'last_checkpoint').write_text('')
    assert checkpoint_problem(str(tmp_path / 'epoch_3.pth'))
    assert find_latest_intact_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    assert find_latest_intact_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
    (tmp_path / 'epoch_2.pth').write_bytes(b'')
    assert find_latest_intact_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_1.pth')


def test_resume_with_nothing_to_resume_says_so(tmp_path, capsys):
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmelsa_test_nothing')
    assert find_latest_intact_checkpoint(str(tmp_path)) is None
    out = capsys.readouterr()
    text = out.out + out.err
    assert 'found no checkpoint to resume' in text and str(tmp_path) in text


def test_fixed_checkpoint_name_is_kept(tmp_path):
    """A filename_tmpl without {} ('latest.pth') with max_keep_ckpts and save_best: each
    save replaces the file of the same name, and the pruning of the expired one must not
    delete it (failed before: no checkpoint was left, last_checkpoint named a missing file)."""
    from mmengine.hooks import CheckpointHook
    work_dir = tmp_path / 'run'
    runner = make_runner(work_dir, 3, max_keep_ckpts=1,
                         checkpoint=dict(filename_tmpl='latest.pth'))
    runner.train()
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['latest.pth']
    assert checkpoint_problem(str(work_dir / 'latest.pth')) is None
    assert torch.load(work_dir / 'latest.pth', weights_only=False)['meta']['iter'] == 3
    with open(work_dir / 'last_checkpoint') as f:
        assert f.read().strip() == str(work_dir / 'latest.pth')
    # the best checkpoint: a new best under the old best's name replaces it, and stays
    hook = CheckpointHook(interval=1, by_epoch=False, save_best='acc', rule='greater',
                          filename_tmpl='latest.pth')
    hook.before_train(runner)
    for acc in (0.5, 0.6):
        hook._save_best_checkpoint(runner, dict(acc=acc))
        best = work_dir / 'best_acc_latest.pth'
        assert best.is_file(), acc
        hub = torch.load(best, weights_only=False)['message_hub']['runtime_info']
        assert hub['best_score'] == acc


def test_resume_after_overwrite_ignores_the_earlier_runs_checkpoints(tmp_path):
    """Run A leaves iter_1..4; run B trains 2 iterations over it with --overwrite; a bare
    --resume of B must continue B from iter_2, not take A's iter_4 (failed before)."""
    work_dir = tmp_path / 'run'
    make_runner(work_dir, 4).train()
    make_runner(work_dir, 2, overwrite_checkpoints=True).train()
    assert find_latest_intact_checkpoint(str(work_dir)) == str(work_dir / 'iter_2.pth')
    runner = make_runner(work_dir, 4, resume=True)
    runner.train()
    assert runner.iter == 4
    assert torch.load(work_dir / 'iter_3.pth', weights_only=False)['meta']['iter'] == 3
    # the pointer's own checkpoint is trusted, and a later one that the pointer missed (a
    # kill between the two writes) is still found
    with open(work_dir / 'last_checkpoint', 'w') as f:
        f.write(str(work_dir / 'iter_3.pth'))
    os.utime(work_dir / 'iter_4.pth')  # written after the pointer
    assert find_latest_intact_checkpoint(str(work_dir)) == str(work_dir / 'iter_4.pth')
