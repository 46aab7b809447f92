"""Config text inside an untrusted checkpoint never runs code, on any path that reads it.

Each test plants config text that mmengine would turn into code (a dotted ``type`` at the top and
nested, ``custom_imports``, a ``_scope_`` redirection, ``_base_``) in the places mmengine reads
text from (``message_hub['runtime_info']['cfg']``, ``meta['cfg']``, ``meta['config']``), loads
the file through a user's entry point, and checks that the planted package was neither imported
nor called. All of this text is plain data, which the earlier syntax check accepted (each test
failed before: the package ran). Trusted files keep mmengine's behaviour.
"""
import os
import os.path as osp
import sys
import uuid

import pytest
import torch

import mmelsa  # noqa: F401  (installs the loader into mmengine)
from mmelsa.checkpoint import TRUST_ENV, UntrustedConfigError, gpu_ids_line, read_checkpoint_file
from tests.engine.tiny_training import make_runner

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py'
SEG = 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py'
#: config text of the shape mmengine dumps, for runs built from Python objects
TINY_TEXT = "model = dict(type='ELSASwinTransformer', embed_dims=8)\ngpu_ids = [0]\n"


class Planted:
    """A package on ``sys.path`` (a new name each time, so that an import really runs) whose
    import, whose ``registry`` module (what a ``_scope_`` imports) and whose ``run`` callable
    (what a dotted ``type`` calls) each leave a mark."""

    def __init__(self, root):
        self.name = f'planted_{uuid.uuid4().hex[:10]}'
        self.marks = root / f'{self.name}_marks'
        self.marks.mkdir()
        pkg = root / self.name
        pkg.mkdir()
        mark = f'import pathlib\nMARKS = pathlib.Path({str(self.marks)!r})\n'
        (pkg / '__init__.py').write_text(
            mark + "(MARKS / 'imported').touch()\n\n\ndef run(*args, **kwargs):\n"
            "    (MARKS / 'called').touch()\n")
        (pkg / 'registry.py').write_text(mark + "(MARKS / 'scope').touch()\n")
        self.base = root / f'{self.name}_base.py'  # a _base_ file: mmengine executes it
        self.base.write_text(mark + "(MARKS / 'base').touch()\nx = 1\n")

    def ran(self):
        return sorted(os.listdir(self.marks))

    def texts(self, config_text):
        """Code-running variants of a model config's text, by shape."""
        top = f"model = dict(type='{self.name}.run', num_classes=3)\n"
        nested = config_text.replace("type='ELSASwinTransformer'", f"type='{self.name}.run'")
        assert nested != config_text
        imports = config_text + (f"custom_imports = dict(imports=['{self.name}'], "
                                 'allow_failed_imports=False)\n')
        scope = config_text.replace('model = dict(', f"model = dict(_scope_='{self.name}', ", 1)
        base = f'_base_ = [{str(self.base)!r}]\n' + config_text
        return dict(top=top, nested=nested, custom_imports=imports, scope=scope, base=base)


@pytest.fixture
def planted(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(TRUST_ENV, raising=False)
    return Planted(tmp_path)


def _model_checkpoint(config, path, text_at):
    """A checkpoint of ``config``'s model (its initial weights) with ``text`` where mmengine
    keeps config text: ``text_at`` maps 'hub' / 'meta' to the text to store there."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS as DET_MODELS
    cfg = Config.fromfile(osp.join(REPO, config))
    init_default_scope(cfg.default_scope)
    from mmseg.registry import MODELS as SEG_MODELS
    registry = DET_MODELS if cfg.default_scope == 'mmdet' else SEG_MODELS
    model = registry.build(cfg.model)
    ckpt = {'state_dict': model.state_dict(), 'meta': {}}
    if 'hub' in text_at:
        ckpt['message_hub'] = {'runtime_info': {'cfg': text_at['hub']}}
    if 'meta' in text_at:
        ckpt['meta']['cfg'] = text_at['meta']
    torch.save(ckpt, path)
    return cfg


@pytest.mark.parametrize('inferencer', ['det', 'seg'])
def test_inferencer_given_weights_alone_refuses_untrusted_config(planted, tmp_path, monkeypatch,
                                                                 inferencer):
    """DetInferencer / MMSegInferencer(model=None, weights=CKPT) build the model from the
    checkpoint's config text: refused in one line naming both ways on; a trusted file still
    builds (the one with the real config text) and predicts."""
    from mmengine.config import Config
    if inferencer == 'det':
        from mmdet.apis import DetInferencer as Inferencer
        config = DET
    else:
        from mmseg.apis import MMSegInferencer as Inferencer
        config = SEG
    real_text = Config.fromfile(osp.join(REPO, config)).pretty_text
    for shape, text in planted.texts(real_text).items():
        for where in ('hub', 'meta'):
            path = tmp_path / f'{shape}_{where}.pth'
            _model_checkpoint(config, path, {where: text})
            with pytest.raises(UntrustedConfigError) as info:
                Inferencer(model=None, weights=str(path), device='cpu')
            message = str(info.value)
            assert '\n' not in message and 'model=CONFIG' in message, message
            assert f'{TRUST_ENV}={path}' in message, message
            assert planted.ran() == [], (shape, where, planted.ran())
    # a trusted file keeps mmengine's behaviour: the model comes from its (real) config text
    good = tmp_path / 'good.pth'
    _model_checkpoint(config, good, {'hub': real_text})
    monkeypatch.setenv(TRUST_ENV, str(good))
    model = Inferencer(model=None, weights=str(good), device='cpu').model
    saved = torch.load(good, weights_only=True)['state_dict']
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)


def test_untrusted_config_text_is_removed_on_every_scheme(planted, tmp_path, monkeypatch,
                                                          mmengine_messages):
    """Whatever loader reads the file (local, or any scheme registered in mmengine, as s3:// and
    pavi:// are), config text from an untrusted file does not reach mmengine: only a gpu_ids
    line, read without running anything, is kept for the resume check. One log line says so."""
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
    texts = planted.texts("model = dict(type='ELSASwinTransformer')\ngpu_ids = range(0, 2)\n")
    ckpt = {'state_dict': {'w': torch.zeros(2)}, 'message_hub': {'runtime_info': {}},
            'meta': {'config': texts['custom_imports'], 'cfg': texts['top']}}
    ckpt['message_hub']['runtime_info']['cfg'] = texts['base']
    path = tmp_path / 'planted.pth'
    torch.save(ckpt, path)
    scheme = f'{planted.name}://'
    # a remote backend's loader, as mmengine's own s3 / pavi loaders are: it reads the bytes
    CheckpointLoader.register_scheme(
        prefixes=scheme, loader=lambda name, map_location: torch.load(
            str(path), map_location=map_location, weights_only=True))
    try:
        for name in (str(path), scheme + 'bucket/planted.pth'):
            loaded = _load_checkpoint(name, map_location='cpu')
            assert loaded['meta'] == {'config': 'gpu_ids = [0, 1]'}, name
            assert loaded['message_hub']['runtime_info'] == {}, name
            torch.testing.assert_close(loaded['state_dict']['w'], torch.zeros(2))
            said = [m for m in mmengine_messages if name in m and 'not trusted' in m]
            assert len(said) == 1 and f'{TRUST_ENV}=' in said[0], mmengine_messages
    finally:
        CheckpointLoader._schemes.pop(scheme, None)
    assert planted.ran() == []
    monkeypatch.setenv(TRUST_ENV, str(path))
    assert read_checkpoint_file(path)['meta'] == ckpt['meta']  # trusted: untouched


def test_plain_mmengine_runner_resume_runs_nothing(planted, tmp_path):
    """mmengine's own Runner (not mmelsa's) resuming after ``import mmelsa``: it parses
    meta['config'] for gpu_ids; planted text runs nothing, the run continues, and the kept
    gpu_ids still drive mmengine's GPU-count check."""
    from mmengine.runner import Runner
    make_runner(tmp_path / 'run', 2).train()
    ckpt = torch.load(tmp_path / 'run' / 'iter_2.pth', weights_only=False)
    for shape, text in planted.texts(TINY_TEXT).items():
        ckpt['meta']['config'] = text
        path = tmp_path / f'{shape}.pth'
        torch.save(ckpt, path)
        runner = make_runner(tmp_path / f'resumed_{shape}', 3, resume=True, load_from=str(path),
                             runner_class=Runner)
        runner.train()
        assert runner.iter == 3 and type(runner) is Runner
        assert planted.ran() == [], (shape, planted.ran())
    ckpt['meta']['config'] = planted.texts(TINY_TEXT + 'gpu_ids = [0, 1]\n')['custom_imports']
    torch.save(ckpt, tmp_path / 'two_gpus.pth')
    runner = make_runner(tmp_path / 'two_gpus', 3, resume=True,
                         load_from=str(tmp_path / 'two_gpus.pth'), runner_class=Runner)
    with pytest.raises(RuntimeError, match='Number of GPUs used'):
        runner.train()
    assert planted.ran() == []


def test_train_tool_resume_runs_nothing(planted, tmp_path, toy_root):
    """``tools/train.py CONFIG --resume CKPT`` with code-running meta['config'] text in CKPT:
    the run resumes (from a real checkpoint of the toy detector) and nothing planted runs."""
    sys.path.insert(0, osp.join(REPO, 'tools'))
    import train as train_tool
    from mmelsa import cli
    from tests.tools.conftest import toy_data_options
    opts = [*toy_data_options('det', toy_root), 'train_cfg.max_epochs=0',
            'train_cfg.val_interval=1']
    args = train_tool.parse_args([DET, '--work-dir', str(tmp_path / 'first'), '--cfg-options',
                                  *opts])
    runner = cli.build_runner(train_tool.build_cfg(args))
    runner.train()  # no epochs: builds everything, trains nothing
    runner.save_checkpoint(str(tmp_path / 'first'), 'epoch_0.pth')
    ckpt = torch.load(tmp_path / 'first' / 'epoch_0.pth', weights_only=False)
    for shape, text in planted.texts(ckpt['meta']['cfg']).items():
        ckpt['meta']['config'] = text
        path = tmp_path / f'{shape}.pth'
        torch.save(ckpt, path)
        train_tool.main([DET, '--resume', str(path), '--work-dir', str(tmp_path / shape),
                         '--cfg-options', *opts])
        assert planted.ran() == [], (shape, planted.ran())


@pytest.mark.parametrize('text,line', [
    ('gpu_ids = [0, 1]\nx = 2', 'gpu_ids = [0, 1]'),
    ('gpu_ids = range(0, 8)', 'gpu_ids = [0, 1, 2, 3, 4, 5, 6, 7]'),
    ('gpu_ids = range(2)', 'gpu_ids = [0, 1]'),
    ('gpu_ids = (3, )\ngpu_ids = [0]', 'gpu_ids = [0]'),
    ("gpu_ids = __import__('os').system('id')", None),
    ('gpu_ids = [0, True]', None),
    ('gpu_ids = [-1]', None),
    ('gpu_ids = range(10 ** 9)', None),
    ("gpu_ids = [0]\n_base_ = ['x.py']", 'gpu_ids = [0]'),
    ('x = 1', None),
    ('gpu_ids = [', None),
    (b'gpu_ids = [0]', None),
])
def test_gpu_ids_are_read_without_running_the_text(text, line):
    assert gpu_ids_line(text) == line
