"""No checkpoint runs code: a planted pickle that would write a file is refused on every path
(mmengine's load_checkpoint, init_cfg=Pretrained, load_from, tools/test.py, --resume, the
converter), each time with one message that names the file, the refused global and the
opt-in; the opt-in loads a trusted legacy file; damaged files give one clear line."""
import argparse
import os
import os.path as osp
import subprocess
import sys
import warnings

import pytest
import torch

import mmelsa  # noqa: F401  (installs the loader into mmengine)
from mmelsa.checkpoint import (TRUST_ENV, CorruptCheckpointError, UnsafeCheckpointError,
                               read_checkpoint_file)
from mmelsa.models import ELSASwinTransformer
from tests.engine.tiny_training import TinyELSARegressor, make_runner

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOY_SEG = 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py'


class WritesAFile:
    """Unpickling this object creates ``marker``: the stand-in for a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f'open({self.marker!r}, "w").close()', ))


@pytest.fixture
def planted(tmp_path):
    """A checkpoint with real weights plus a code-running object in its meta."""
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'evil.pth'
    model = TinyELSARegressor()
    torch.save({'state_dict': model.state_dict(), 'meta': {'note': WritesAFile(marker)}},
               path)
    return path, marker


def _assert_refused_message(text, path):
    assert str(path) in text and 'the global exec' in text and TRUST_ENV in text, text


def test_loader_refuses_planted_file(planted):
    path, marker = planted
    with pytest.raises(UnsafeCheckpointError) as info:
        read_checkpoint_file(path)
    assert not marker.exists()
    _assert_refused_message(str(info.value), path)
    assert '\n' not in str(info.value)


def test_mmengine_load_checkpoint_in_a_user_script(planted):
    from mmengine.runner import load_checkpoint
    path, marker = planted
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(TinyELSARegressor(), str(path))
    assert not marker.exists()


def test_init_cfg_pretrained(planted):
    path, marker = planted
    model = ELSASwinTransformer(embed_dims=8, depths=(1, 1), num_heads=(1, 2), group_width=4,
                                strides=(4, 2), elsa_stages=(0, ), window_size=4,
                                out_indices=(1, ),
                                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(UnsafeCheckpointError):
        model.init_weights()
    assert not marker.exists()


def test_runner_load_from_and_resume(planted, tmp_path):
    path, marker = planted
    with pytest.raises(UnsafeCheckpointError):
        make_runner(tmp_path / 'load', 1, load_from=str(path)).train()
    with pytest.raises(UnsafeCheckpointError):
        make_runner(tmp_path / 'resume', 1, resume=True, load_from=str(path)).train()
    assert not marker.exists()


def _tool(args, env=None):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONPATH=REPO, **(env or {})))


def _one_line_error(res, path):
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-3000:]
    assert 'Traceback' not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith('error: '), res.stderr[-2000:]
    _assert_refused_message(last, path)


def test_tools_refuse_with_one_line(planted, tmp_path, toy_root):
    """tools/test.py CONFIG CKPT, tools/train.py load_from= and --resume CKPT, the converter."""
    from tests.tools.conftest import toy_data_options
    path, marker = planted
    data = toy_data_options('seg', toy_root)
    work = str(tmp_path / 'work')
    _one_line_error(_tool(['tools/test.py', TOY_SEG, str(path), '--work-dir', work,
                           '--cfg-options', *data]), path)
    _one_line_error(_tool(['tools/train.py', TOY_SEG, '--work-dir', work, '--cfg-options',
                           f'load_from={path}', 'train_cfg.max_iters=1', *data]), path)
    _one_line_error(_tool(['tools/train.py', TOY_SEG, '--work-dir', work, '--resume', str(path),
                           '--cfg-options', 'train_cfg.max_iters=1', *data]), path)
    res = _tool(['tools/model_converters/elsa2mmelsa.py', str(path), str(tmp_path / 'out.pth')])
    assert res.returncode != 0 and not (tmp_path / 'out.pth').exists()
    _assert_refused_message(res.stderr.strip().splitlines()[-1], path)
    assert not marker.exists()


def test_opt_in_loads_a_trusted_legacy_file(tmp_path, monkeypatch):
    legacy = tmp_path / 'legacy.pth'
    torch.save({'state_dict': {'w': torch.ones(3)}, 'args': argparse.Namespace(lr=0.1)}, legacy)
    with pytest.raises(UnsafeCheckpointError, match='argparse.Namespace'):
        read_checkpoint_file(legacy)
    monkeypatch.setenv(TRUST_ENV, str(legacy))
    loaded = read_checkpoint_file(legacy)
    assert loaded['args'].lr == 0.1
    # trusting one file trusts no other
    other = tmp_path / 'other.pth'
    torch.save({'args': argparse.Namespace(lr=0.2)}, other)
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint_file(other)


def test_converter_opt_in(tmp_path):
    legacy = tmp_path / 'legacy.pth'
    sd = TinyELSARegressor().backbone.state_dict()
    torch.save({'model': sd, 'args': argparse.Namespace(lr=0.1)}, legacy)
    out = tmp_path / 'converted.pth'
    # trusting another file does not trust this one; the refusal names the flag as it is taken
    torch.save({'state_dict': {}}, tmp_path / 'other.pth')
    res = _tool(['tools/model_converters/elsa2mmelsa.py', str(legacy), str(out),
                 '--trust-checkpoint', str(tmp_path / 'other.pth')])
    assert res.returncode != 0 and f'--trust-checkpoint {legacy}' in res.stderr, res.stderr
    res = _tool(['tools/model_converters/elsa2mmelsa.py', str(legacy), str(out),
                 '--trust-checkpoint', str(legacy)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert set(torch.load(out)['state_dict']) == set(sd)
    res = _tool(['tools/model_converters/elsa2mmelsa.py', str(legacy), str(out),
                 '--trust-checkpoint', str(legacy)])
    assert res.returncode != 0 and '--overwrite' in res.stderr  # never replaced silently


def test_mmengine_checkpoint_loads_through_pretrained_without_warning(tmp_path, recwarn):
    """A legitimate mmengine checkpoint (message hub with numpy objects) needs no opt-in."""
    runner = make_runner(tmp_path, 1)
    runner.train()
    ckpt = tmp_path / 'iter_1.pth'
    assert 'message_hub' in torch.load(ckpt, weights_only=False)
    model = TinyELSARegressor()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(ckpt),
                                       prefix='backbone.')
        model.backbone.init_weights()
    trained = runner.model.backbone.state_dict()
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, trained[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize('damage', ['empty', 'truncated', 'garbage'])
def test_damaged_file_is_one_clear_line(tmp_path, damage):
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {'w': torch.randn(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes({'empty': b'', 'truncated': data[:len(data) // 2],
                      'garbage': b'not a checkpoint at all' * 10}[damage])
    with pytest.raises(CorruptCheckpointError) as info:
        read_checkpoint_file(path)
    message = str(info.value)
    assert str(path) in message and '\n' not in message


def _config_code(marker):
    """Config text that creates ``marker`` when mmengine runs it (Config.fromstring)."""
    return f"open({str(marker)!r}, 'w').close()\ngpu_ids = [0]\n"


@pytest.fixture
def config_code_checkpoint(tmp_path):
    """A real 2-iteration checkpoint whose three config texts were replaced by code: it holds
    only strings, so torch.load(weights_only=True) accepts it."""
    make_runner(tmp_path / 'run', 2).train()
    ckpt = torch.load(tmp_path / 'run' / 'iter_2.pth', weights_only=False)
    markers = {}
    for name, holder, key in (('meta_config', ckpt['meta'], 'config'),
                              ('meta_cfg', ckpt['meta'], 'cfg'),
                              ('hub_cfg', ckpt['message_hub']['runtime_info'], 'cfg')):
        markers[name] = tmp_path / f'ran_{name}'
        holder[key] = _config_code(markers[name])
    path = tmp_path / 'config_code.pth'
    torch.save(ckpt, path)
    return path, markers


def test_config_code_in_a_checkpoint_is_not_run(config_code_checkpoint, mmengine_messages,
                                                tmp_path):
    """mmengine turns checkpoint config text into code on resume (meta['config']) and in
    Inferencers given weights alone (runtime_info / meta 'cfg'): from an untrusted file the
    loader removes it, keeping only a gpu_ids line for the resume check, and says so once."""
    path, markers = config_code_checkpoint
    ckpt = read_checkpoint_file(path)
    assert ckpt['meta']['config'] == 'gpu_ids = [0]' and 'cfg' not in ckpt['meta']
    assert 'cfg' not in ckpt['message_hub']['runtime_info']
    assert ckpt['state_dict'], 'the weights stay usable'
    said = [m for m in mmengine_messages if str(path) in m and TRUST_ENV in m]
    assert len(said) == 1 and 'not trusted' in said[0], said
    # resume through the Runner: training goes on from iteration 2
    runner = make_runner(tmp_path / 'resumed', 3, resume=True, load_from=str(path))
    runner.train()
    assert runner.iter == 3
    # an Inferencer given the weights alone: refused, nothing run
    from mmdet.apis import DetInferencer

    from mmelsa.checkpoint import UntrustedConfigError
    with pytest.raises(UntrustedConfigError, match='Pass the config'):
        DetInferencer(model=None, weights=str(path), device='cpu')
    assert not any(m.exists() for m in markers.values()), markers


def test_trusted_files_keep_their_config_text(tmp_path, monkeypatch):
    """An mmengine checkpoint of our own: untrusted, only its config text is left out (weights,
    message hub statistics and meta stay); trusted, it loads whole, as a full unpickle would."""
    make_runner(tmp_path / 'plain', 1).train()
    path = tmp_path / 'plain' / 'iter_1.pth'
    whole = torch.load(path, weights_only=False)
    assert 'cfg' in whole['meta'] and 'cfg' in whole['message_hub']['runtime_info']
    untrusted = read_checkpoint_file(path)
    assert 'cfg' not in untrusted['meta'] and 'cfg' not in untrusted['message_hub']['runtime_info']
    assert untrusted['meta']['iter'] == 1 and untrusted['message_hub']['log_scalars']
    monkeypatch.setenv(TRUST_ENV, str(path))
    trusted = read_checkpoint_file(path)
    assert trusted['meta']['cfg'] == whole['meta']['cfg']
    assert trusted['message_hub']['runtime_info']['cfg'] == whole['meta']['cfg']


def test_inferencers_refuse_weights_that_do_not_fit(tmp_path):
    """DetInferencer / MMSegInferencer load weights non-strictly (failed before: another
    model's checkpoint gave predictions from partly random weights, with a log warning);
    mmelsa's check applies, with the config's allow_partial_load as the opt-in."""
    from mmengine.config import Config
    from mmseg.apis import MMSegInferencer

    from mmelsa.checkpoint import CheckpointMismatchError
    cfg = Config.fromfile(osp.join(REPO, TOY_SEG))
    fits = tmp_path / 'fits.pth'
    inferencer = MMSegInferencer(model=cfg, device='cpu')  # random weights, nothing loaded
    torch.save({'state_dict': inferencer.model.state_dict()}, fits)
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'backbone.foo': torch.zeros(3)}}, other)
    with pytest.raises(CheckpointMismatchError, match=f'checkpoint {other} does not fit'):
        MMSegInferencer(model=cfg, weights=str(other), device='cpu')
    loaded = MMSegInferencer(model=cfg, weights=str(fits), device='cpu')
    for k, v in inferencer.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v, rtol=0, atol=0)
    cfg.allow_partial_load = True  # the opt-in: loads what fits
    MMSegInferencer(model=cfg, weights=str(other), device='cpu')
    # mmdet's DetInferencer has its own weight loading: checked as well
    from mmdet.apis import DetInferencer
    det_cfg = Config.fromfile(osp.join(REPO, 'configs/toy/'
                                       'mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py'))
    with pytest.raises(CheckpointMismatchError, match=f'checkpoint {other} does not fit'):
        DetInferencer(model=det_cfg, weights=str(other), device='cpu')
