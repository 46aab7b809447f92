"""README.md's "Deploy" section, run as written: its Python export blocks (extracted from the
README here, so the README and this test cannot drift) and its toy tool commands (the bash
block's ``pytorch2onnx.py`` examples, ``[CHECKPOINT]`` left out: the config's initialisation).

Failed before: the dynamo block's ``Dim('b')`` raised "Invalid ranges [2:1]" at batch 1.
"""
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def deploy_blocks(language):
    """The ```language fenced blocks of README.md's "## Deploy" section."""
    with open(osp.join(REPO, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    section = text[text.index('\n## Deploy\n'):]
    end = section.find('\n## ', 1)
    section = section[:end] if end > 0 else section
    return re.findall(rf'^```{language}\n(.*?)^```', section, re.S | re.M)


def test_readme_has_the_blocks():
    assert len(deploy_blocks('python')) >= 1 and len(deploy_blocks('bash')) >= 1


@pytest.mark.parametrize('batch', [1, 2])
def test_python_export_block_runs_as_written(tmp_path, monkeypatch, batch):
    (block, ) = [b for b in deploy_blocks('python') if 'torch.onnx.export' in b]
    if batch != 1:  # the same block at another batch (as written: batch 1)
        assert 'x = torch.randn(1, ' in block
        block = block.replace('x = torch.randn(1, ', f'x = torch.randn({batch}, ')
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, 'README.md (Deploy)', 'exec'), namespace)
    # the file it leaves (the dynamo export, last) takes other batches and sizes
    session = ort.InferenceSession('elsa_swin.onnx', providers=['CPUExecutionProvider'])
    import torch
    for shape in ((1, 3, 64, 64), (3, 3, 96, 128)):
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = namespace['backbone'](x)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        for g, e in zip(got, expected):
            assert g.shape == tuple(e.shape)
            assert np.abs(g - e.numpy()).max() <= 1e-3 * max(1., float(e.abs().max()))


def _tool_commands():
    """The README's example commands of pytorch2onnx.py (not the usage line), as argv."""
    commands = []
    for block in deploy_blocks('bash'):
        for command in block.replace('\\\n', ' ').splitlines():
            command = command.split('#')[0].strip()
            if 'pytorch2onnx.py' in command and 'CONFIG' not in command:
                commands.append(shlex.split(command.replace('[CHECKPOINT]', '')))
    return commands


def test_readme_tool_commands_are_found():
    assert len(_tool_commands()) == 2


@pytest.fixture(scope='module')
def readme_cwd(tmp_path_factory):
    """A folder like the repository root after ``python -m mmelsa.datasets.toy --out data``
    (small sets: the commands use one image each)."""
    from mmelsa.datasets.toy import generate_toy_ade, generate_toy_coco
    root = tmp_path_factory.mktemp('readme')
    for name in ('configs', 'tools'):
        os.symlink(osp.join(REPO, name), root / name)
    generate_toy_coco(str(root / 'data'), seed=0, num_train=1, num_val=1)
    generate_toy_ade(str(root / 'data'), seed=0, num_train=1, num_val=1)
    return root


@pytest.mark.parametrize('index', [0, 1], ids=['detector', 'segmenter'])
def test_readme_tool_command_runs_as_written(readme_cwd, index):
    argv = _tool_commands()[index]
    assert argv[0] == 'python'
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    res = subprocess.run([sys.executable] + argv[1:], cwd=readme_cwd, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    out = argv[argv.index('--out') + 1]
    assert osp.isfile(readme_cwd / out)
    os.remove(readme_cwd / out)  # the next run starts without it
