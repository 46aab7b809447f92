"""Checkpoint saves cannot be redirected and never delete another process's file: the temporary
file of every save (checkpoints, last_checkpoint) has a random name and is created exclusively,
so a symlink planted where it would be written is not followed; the rename replaces a symlink
at the final name instead of writing through it; the clean-up removes only this process's own
temporary files. And a CheckpointHook with its own filename_tmpl has its files protected from a
new run like epoch_{}.pth / iter_{}.pth."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmelsa.engine import WorkDirNotEmptyError, atomic_write, check_work_dir_is_free, saving
from mmelsa.engine.saving import PARTIAL_SUFFIX, checkpoint_problem, existing_checkpoints
from tests.engine.tiny_training import make_runner

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOY_SEG = 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py'
VICTIM = b'a file outside the work dir that no save may write'


def _victim(tmp_path, name):
    """A file outside the work dir, the target of a planted symlink."""
    outside = tmp_path / 'outside'
    outside.mkdir(exist_ok=True)
    victim = outside / name
    victim.write_bytes(VICTIM)
    return victim


def _plant_link(at, target):
    at.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, at)
    return at


def _assert_untouched(victim):
    assert victim.read_bytes() == VICTIM, f'{victim} was written through a planted symlink'


def test_symlinks_at_the_partial_names_are_not_followed(tmp_path):
    """Symlinks planted at the names the temporary files of iter_1.pth and last_checkpoint had
    (``.NAME.<pid>.mmelsa-partial``, predictable) point outside the work dir. Failed before:
    the save opened the link, wrote the checkpoint into its target and renamed the link to
    iter_1.pth."""
    work = tmp_path / 'run'
    pid = os.getpid()
    planted = {}
    for name in ('iter_1.pth', 'last_checkpoint'):
        victim = _victim(tmp_path, name)
        planted[victim] = _plant_link(work / f'.{name}.{pid}{PARTIAL_SUFFIX}', victim)
    make_runner(work, 1).train()
    for victim, link in planted.items():
        _assert_untouched(victim)
        assert link.is_symlink()  # not ours: left alone
    assert not (work / 'iter_1.pth').is_symlink()
    assert checkpoint_problem(str(work / 'iter_1.pth')) is None
    assert not (work / 'last_checkpoint').is_symlink()
    assert (work / 'last_checkpoint').read_text().strip() == str(work / 'iter_1.pth')


def test_a_taken_partial_name_is_skipped_not_opened(tmp_path, monkeypatch):
    """Whatever name is drawn, one that exists (a planted symlink) is never opened: the save
    draws another."""
    victim = _victim(tmp_path, 'victim')
    work = tmp_path / 'run'
    link = _plant_link(work / f'.epoch_1.pth.planted{PARTIAL_SUFFIX}', victim)
    names = iter(['planted', 'fresh'])
    monkeypatch.setattr(saving.secrets, 'token_hex', lambda n: next(names))
    atomic_write(str(work / 'epoch_1.pth'), lambda f: torch.save({'w': torch.ones(2)}, f))
    _assert_untouched(victim)
    assert link.is_symlink()
    assert torch.equal(torch.load(work / 'epoch_1.pth')['w'], torch.ones(2))
    assert sorted(os.listdir(work)) == [link.name, 'epoch_1.pth']


def test_symlinks_at_the_final_names_are_replaced_not_written_through(tmp_path):
    """A symlink at iter_1.pth (a run with --overwrite) and at last_checkpoint: the rename
    replaces the link itself; the files it pointed at stay as they were."""
    work = tmp_path / 'run'
    victims = [_victim(tmp_path, name) for name in ('iter_1.pth', 'last_checkpoint')]
    for victim in victims:
        _plant_link(work / victim.name, victim)
    make_runner(work, 1, overwrite_checkpoints=True).train()
    for victim in victims:
        _assert_untouched(victim)
        assert (work / victim.name).is_file() and not (work / victim.name).is_symlink()
    assert checkpoint_problem(str(work / 'iter_1.pth')) is None
    # atomic_write alone (the converter's writes too)
    victim = _victim(tmp_path, 'converted.pth')
    _plant_link(work / 'converted.pth', victim)
    atomic_write(str(work / 'converted.pth'), lambda f: f.write(b'new'))
    _assert_untouched(victim)
    assert (work / 'converted.pth').read_bytes() == b'new'


def test_other_processes_partial_files_survive_the_clean_up(tmp_path):
    """Partial files this process did not create (another run saving into the same folder, a
    killed run's leftovers, a planted name) are not deleted by a save. Failed before: every
    ``.*.mmelsa-partial`` of the folder was removed after each checkpoint."""
    work = tmp_path / 'run'
    work.mkdir()
    others = [work / f'.iter_1.pth.{os.getpid() + 1}{PARTIAL_SUFFIX}',
              work / f'.last_checkpoint.4242{PARTIAL_SUFFIX}',
              work / f'.iter_2.pth.0123456789abcdef{PARTIAL_SUFFIX}']
    for i, path in enumerate(others):
        path.write_bytes(b'another run is writing this %d' % i)
    make_runner(work, 2).train()
    for i, path in enumerate(others):
        assert path.read_bytes() == b'another run is writing this %d' % i, path
    ours = [n for n in os.listdir(work) if n.endswith(PARTIAL_SUFFIX)]
    assert sorted(ours) == sorted(p.name for p in others)  # none of our own left


def test_own_partial_left_by_a_failed_save_is_removed_later(tmp_path, monkeypatch):
    """A temporary file that a failed save could not remove is recorded as ours and removed
    by the next save into that folder; another process's is not."""
    from mmengine.runner.checkpoint import save_checkpoint
    folder = tmp_path / 'run'
    folder.mkdir()
    other = folder / f'.epoch_1.pth.{os.getpid() + 1}{PARTIAL_SUFFIX}'
    other.write_bytes(b'theirs')

    def broken(f):
        f.write(b'half')
        raise KeyboardInterrupt

    def refuse(path):
        raise PermissionError(path)

    with monkeypatch.context() as m:
        m.setattr(os, 'remove', refuse)
        with pytest.raises(KeyboardInterrupt):
            atomic_write(str(folder / 'epoch_1.pth'), broken)
    left = [n for n in os.listdir(folder) if n.endswith(PARTIAL_SUFFIX) and n != other.name]
    assert len(left) == 1  # ours, which could not be removed
    save_checkpoint({'w': torch.ones(1)}, str(folder / 'epoch_1.pth'))
    assert sorted(os.listdir(folder)) == sorted([other.name, 'epoch_1.pth'])
    assert other.read_bytes() == b'theirs'


def test_custom_filename_tmpl_work_dir_is_refused(tmp_path):
    """A CheckpointHook with filename_tmpl='ckpt_{}.pth' saves ckpt_1.pth, ckpt_2.pth: a new
    run into that work dir is refused like one over iter_*.pth (failed before: it trained and
    replaced them)."""
    tmpl = dict(filename_tmpl='ckpt_{}.pth')
    make_runner(tmp_path, 2, checkpoint=tmpl).train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['ckpt_1.pth', 'ckpt_2.pth']
    before = (tmp_path / 'ckpt_2.pth').read_bytes()
    with pytest.raises(WorkDirNotEmptyError) as info:
        make_runner(tmp_path, 2, checkpoint=tmpl).train()
    msg = str(info.value)
    assert all(s in msg for s in ('--resume', '--work-dir', '--overwrite', 'ckpt_2.pth'))
    assert str(tmp_path) in msg and '\n' not in msg
    assert (tmp_path / 'ckpt_2.pth').read_bytes() == before
    make_runner(tmp_path, 3, resume=True, checkpoint=tmpl).train()  # resuming is allowed
    make_runner(tmp_path, 1, overwrite_checkpoints=True, checkpoint=tmpl).train()


def test_custom_filename_tmpl_in_a_checkpoint_out_dir_is_refused(tmp_path):
    out_dir = tmp_path / 'ckpts'
    hook = dict(out_dir=str(out_dir), filename_tmpl='model-{:04d}.pth')
    make_runner(tmp_path / 'a' / 'exp', 1, checkpoint=hook).train()
    saved = out_dir / 'exp' / 'model-0001.pth'
    before = saved.read_bytes()
    with pytest.raises(WorkDirNotEmptyError, match='model-0001.pth'):
        make_runner(tmp_path / 'b' / 'exp', 1, checkpoint=hook).train()
    assert saved.read_bytes() == before


def test_checkpoint_names_follow_the_template(tmp_path):
    from mmelsa.engine.runner import checkpoint_filename_tmpl
    for name in ('ckpt_3.pth', 'ckpt_12.pth', 'ckpt_x.pth', 'ckpt_3.pth.bak', 'iter_7.pth',
                 'best_acc_ckpt_3.pth', 'latest.pth'):
        (tmp_path / name).write_bytes(b'')
    names = [osp.basename(p) for p in existing_checkpoints(str(tmp_path), ('ckpt_{}.pth', ))]
    assert names == ['ckpt_12.pth', 'ckpt_3.pth']
    assert [osp.basename(p) for p in existing_checkpoints(str(tmp_path))] == ['iter_7.pth']
    fixed = existing_checkpoints(str(tmp_path), ('latest.pth', ))  # a template without {}
    assert [osp.basename(p) for p in fixed] == ['latest.pth']
    with pytest.raises(WorkDirNotEmptyError, match='latest.pth'):
        check_work_dir_is_free(str(tmp_path), ['latest.pth'])
    assert checkpoint_filename_tmpl(dict(by_epoch=False)) == 'iter_{}.pth'
    assert checkpoint_filename_tmpl(dict()) == 'epoch_{}.pth'
    assert checkpoint_filename_tmpl(dict(filename_tmpl='c{}.pth')) == 'c{}.pth'


def test_train_tool_refuses_a_custom_template_work_dir(tmp_path, toy_root):
    """tools/train.py ends with the same one-line error for ckpt_{}.pth files."""
    from tests.tools.conftest import toy_data_options
    work = tmp_path / 'w'
    work.mkdir()
    (work / 'ckpt_5.pth').write_bytes(b'an earlier run')
    res = subprocess.run(
        [sys.executable, 'tools/train.py', TOY_SEG, '--work-dir', str(work), '--cfg-options',
         'train_cfg.max_iters=1', 'default_hooks.checkpoint.filename_tmpl=ckpt_{}.pth',
         *toy_data_options('seg', toy_root)], cwd=REPO, capture_output=True, text=True,
        timeout=600, env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode == 2, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith('error: work dir') and 'ckpt_5.pth' in last, last
    assert '--resume' in last and '--overwrite' in last, last
    assert (work / 'ckpt_5.pth').read_bytes() == b'an earlier run'
