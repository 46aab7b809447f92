"""The toy loop end to end: tools/run_toy.sh, --resume after an interruption, and a
2-process (gloo, CPU) run through tools/dist_train.sh. Short schedules on the small toy sets
(24 train / 8 val images); they check the plumbing, not the accuracy (docs/benchmarks.md has
the full toy run's numbers)."""
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from .conftest import REPO, needs_stack, python, run_tool, toy_data_options

DET = 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py'
SEG = 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py'
pytestmark = [needs_stack, pytest.mark.slow]


def _metrics(stdout):
    lines = [ln for ln in stdout.splitlines() if ln.startswith('mmelsa-metrics: ')]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len('mmelsa-metrics: '):])


def test_run_toy_script(tmp_path, toy_root):
    """tools/run_toy.sh with a 1-epoch / 10-iteration schedule: trains (validating the untrained
    model first), tests, and writes what a person looks at: pictures, an overview, the curves,
    per-class figures and the final table."""
    stamp = osp.join(toy_root, 'toy_coco', '.toy_dataset.json')
    before = os.path.getmtime(stamp)
    work = tmp_path / 'work'
    res = run_tool(['bash', 'tools/run_toy.sh'], env=dict(
        DATA_DIR=toy_root, WORK_DIR=str(work), PYTHON=python(),
        # the session's small sets: the stamp matches, nothing is regenerated
        TOY_GEN_ARGS='--num-train 24 --num-val 8',
        DET_TRAIN_ARGS='--cfg-options train_cfg.max_epochs=1',
        SEG_TRAIN_ARGS='--cfg-options train_cfg.max_iters=10 train_cfg.val_interval=100'),
        timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    # only the sets of the tasks run: the classification set (12000 images) is not made
    assert not osp.exists(osp.join(toy_root, 'toy_cls'))
    table = out[out.index('toy end-to-end results'):]
    assert re.search(r'^task +metric +value +untrained +time$', table, re.M), table
    for task, keys in (('det', ('coco/bbox_mAP', 'coco/segm_mAP')), ('seg', ('mIoU', ))):
        wd = work / task
        with open(wd / 'summary.json') as f:
            summary = json.load(f)
        test_metrics = _metrics((wd / 'test.log').read_text())
        for k in keys:
            # our figure from the saved predictions agrees with the test tool's evaluator
            # (which rounds: mmdet AP to 3 places, mmseg IoU to 2)
            tol = 6e-4 if task == 'det' else 6e-3
            assert summary['metrics'][k] == pytest.approx(test_metrics[k], abs=tol), k
            assert k in summary['untrained']  # validated before the first iteration
            assert re.search(rf'^{task} +{re.escape(k)} +[0-9.]+ +[0-9.]+ +[0-9]+ s$',
                             table, re.M), table
        groups = summary['per_class'].values()
        assert all(len(g) == (3 if task == 'det' else 5) for g in groups)
        pics = [f for f in os.listdir(wd / 'vis') if f.endswith('.png')]
        assert len(pics) == 8, pics  # every val image
        for name in ('overview.png', 'curves.png'):
            assert (wd / name).stat().st_size > 10_000, name  # a real picture, not a stub
            assert name in table or str(wd / name) in table
    import cv2
    grid = cv2.imread(str(work / 'det' / 'overview.png'))
    pic = cv2.imread(str(work / 'det' / 'vis' / '000000.png'))
    # upscaled (3x of 160 px, twice: ground truth and prediction) and six of them, 2 per row
    assert pic.shape[1] >= 2 * 3 * 160 and grid.shape[0] >= 3 * pic.shape[0]
    times = dict(ln.rsplit(' ', 1) for ln in (work / 'times.txt').read_text().splitlines())
    assert {'data', 'train det', 'test det', 'report det', 'train seg', 'test seg',
            'report seg'} == set(times)
    assert 'total wall time' in table
    assert os.path.getmtime(stamp) == before  # idempotent: the data was not regenerated


def _train_cmd(work, epochs, data_opts, extra=()):
    return [python(), 'tools/train.py', DET, '--work-dir', str(work), '--cfg-options',
            f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            'train_dataloader.batch_size=4', *data_opts, *extra]


def test_resume_after_interruption(tmp_path, toy_root):
    """Kill a 3-epoch run after its first checkpoint; `--resume` (no path) continues from the
    last checkpoint: same epoch/iteration counters, optimizer and scheduler state."""
    opts = toy_data_options('det', toy_root)
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='2')
    log = open(tmp_path / 'first.log', 'w')
    proc = subprocess.Popen(_train_cmd(work, 3, opts), cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    last = work / 'last_checkpoint'
    deadline = time.time() + 400
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert last.exists(), open(tmp_path / 'first.log').read()[-3000:]
    time.sleep(0.5)  # the checkpoint file is complete once last_checkpoint names it
    os.killpg(proc.pid, signal.SIGKILL)  # the group we started (start_new_session)
    proc.wait()
    ckpt_path = last.read_text().strip()
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=False)
    epoch, it = ckpt['meta']['epoch'], ckpt['meta']['iter']
    assert epoch >= 1 and it == epoch * 6  # 24 images / batch 4

    # In process: the state the Runner resumes with is the checkpoint's.
    sys.path.insert(0, osp.join(REPO, 'tools'))
    import train as train_tool
    args = train_tool.parse_args(_train_cmd(work, 3, opts, ['--resume'])[2:])
    cfg = train_tool.build_cfg(args)
    from mmelsa import cli
    runner = cli.build_runner(cfg)  # what tools/train.py builds
    runner.load_or_resume()
    assert (runner.epoch, runner.iter) == (epoch, it)
    opt = runner.optim_wrapper.state_dict()
    assert opt['param_groups'] == ckpt['optimizer']['param_groups']
    for pid, st in ckpt['optimizer']['state'].items():
        assert torch.equal(opt['state'][pid]['exp_avg'], st['exp_avg'])
        assert int(opt['state'][pid]['step']) == int(st['step']) == it
    assert [s.state_dict() for s in runner.param_schedulers] == ckpt['param_schedulers']
    del runner

    # And the CLI continues to the end from there.
    res = run_tool(_train_cmd(work, 3, opts, ['--resume'])[1:], timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert f'resumed epoch: {epoch}, iter: {it}' in out, out[-3000:]
    final = torch.load(work / 'epoch_3.pth', map_location='cpu', weights_only=False)
    assert (final['meta']['epoch'], final['meta']['iter']) == (3, 18)


def test_dist_train_two_processes_gloo(tmp_path, toy_root):
    """tools/dist_train.sh with 2 CPU processes (the tools switch NCCL to gloo without GPUs)."""
    work = tmp_path / 'dist'
    res = run_tool(['bash', 'tools/dist_train.sh', DET, '2', '--work-dir', str(work),
                    '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                    'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2',
                    *toy_data_options('det', toy_root)],
                   env=dict(PYTHON=python(), PORT=str(29500 + os.getpid() % 1000),
                            OMP_NUM_THREADS='1'), timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    # mmengine's runtime-environment log ("GPU number" is its name for the world size)
    assert 'Distributed training: True' in out and 'GPU number: 2' in out, out[-5000:]
    assert "backend='gloo'" in out or '"backend": "gloo"' in out or "'backend': 'gloo'" in out
    ckpt = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=False)
    # 24 images split over 2 ranks with 2 per rank: 6 iterations per epoch.
    assert ckpt['meta']['iter'] == 6
    assert 'coco/bbox_mAP' in out


def test_test_tool_seg_tta_and_out(tmp_path, toy_root):
    """tools/test.py --tta (ms + flip) and --out on the segmenter, from a 5-iteration model."""
    work = tmp_path / 'seg'
    opts = toy_data_options('seg', toy_root)
    res = run_tool(['tools/train.py', SEG, '--work-dir', str(work), '--cfg-options',
                    'train_cfg.max_iters=5', 'train_cfg.val_interval=100', *opts])
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    ckpt = (work / 'last_checkpoint').read_text().strip()
    res = run_tool(['tools/test.py', SEG, ckpt, '--work-dir', str(work), '--tta',
                    '--out', str(tmp_path / 'pred'), '--cfg-options', *opts])
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert 'mIoU' in _metrics(res.stdout)
    assert len(os.listdir(tmp_path / 'pred')) == 8


def test_run_toy_script_refuses_an_unknown_task_before_any_work(tmp_path):
    """A misspelt task stops the script at once (exit 2), before data is generated (it
    failed only after generating all three sets and training the tasks before it)."""
    data = tmp_path / 'data'
    res = run_tool(['bash', 'tools/run_toy.sh'], env=dict(
        TASKS='det clss', DATA_DIR=str(data), WORK_DIR=str(tmp_path / 'work'),
        PYTHON=python()), timeout=60)
    assert res.returncode == 2, (res.stdout + res.stderr)[-3000:]
    assert 'unknown task clss (use det, seg, cls and/or ddf)' in res.stderr
    assert not data.exists()


def test_run_toy_script_classifier(tmp_path):
    """TASKS='cls ddf': the toy ELSA-Swin and DDF-ResNet classifiers, 2 epochs each on one
    small shape set (generated once): each trains (validating the untrained model first), tests
    with --out, and its report's top-1 and per-class accuracy, computed from the saved
    predictions, agree with mmpretrain's Accuracy metric of the test tool; the table names each
    run."""
    from mmelsa.datasets.toy import generate_toy_cls
    data = tmp_path / 'data'
    generate_toy_cls(str(data), seed=0, num_train=24, num_val=9)
    work = tmp_path / 'work'
    res = run_tool(['bash', 'tools/run_toy.sh'], env=dict(
        TASKS='cls ddf', DATA_DIR=str(data), WORK_DIR=str(work), PYTHON=python(),
        TOY_GEN_ARGS='--num-train 24 --num-val 9',
        CLS_TRAIN_ARGS='--cfg-options train_cfg.max_epochs=2 train_cfg.val_interval=1',
        DDF_TRAIN_ARGS='--cfg-options train_cfg.max_epochs=2 train_cfg.val_interval=1'),
        timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert out.count('generating toy data') == 1 and 'for: cls )' in out  # one set for both
    table = out[out.index('toy end-to-end results'):]
    for task in ('cls', 'ddf'):
        wd = work / task
        with open(wd / 'summary.json') as f:
            summary = json.load(f)
        test_metrics = _metrics((wd / 'test.log').read_text())
        top1 = summary['metrics']['accuracy/top1']
        assert top1 == pytest.approx(test_metrics['accuracy/top1'], abs=1e-3)
        per_class = summary['per_class']['accuracy']
        assert sorted(per_class) == ['circle', 'square', 'triangle']
        assert top1 == pytest.approx(sum(per_class.values()) / 3, abs=1e-6)  # 3 images each
        assert 'accuracy/top1' in summary['untrained']
        assert len([f for f in os.listdir(wd / 'vis') if f.endswith('.png')]) == 9
        assert re.search(rf'^{task} +accuracy/top1 +[0-9.]+ +[0-9.]+ +[0-9]+ s$', table,
                         re.M), table
