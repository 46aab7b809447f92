"""Each way a hostile checkpoint got past the path-by-path checks, planted and refused at the gate.

Every test here failed before the gate existed (code ran, a swapped or same-named file was
trusted, or memory ran out); each plants its own payload.
"""
import argparse
import io
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch

import mmelsa  # noqa: F401  (installs the gate into mmengine)
from mmelsa.checkpoint import (TRUST_ENV, CheckpointTooLargeError, TrustListError,
                               UnsafeCheckpointError, UntrustedConfigError, read_checkpoint,
                               read_checkpoint_file)
from tests.engine.tiny_training import TinyELSARegressor, make_runner

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _code(marker):
    """Config text that creates ``marker`` when mmengine runs it (Config.fromstring)."""
    return f"open({str(marker)!r}, 'w').close()\ngpu_ids = [0]\n"


def _structured_scalar(**fields):
    """A numpy structured scalar: a str key lookup returns an np.str_, ``'config' in it`` is true
    when a value is 'config', and it is not a dict."""
    dt = np.dtype([(k, f'U{max(len(v), 1)}') for k, v in fields.items()])
    return np.array([tuple(fields.values())], dtype=dt)[0]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A real 2-iteration checkpoint of the tiny regressor (message hub included)."""
    root = tmp_path_factory.mktemp('trained')
    make_runner(root / 'run', 2).train()
    return torch.load(root / 'run' / 'iter_2.pth', weights_only=False)


PLACES = {
    'meta': lambda c, code: c.__setitem__('meta', _structured_scalar(config=code, cfg=code)),
    'meta.config': lambda c, code: c['meta'].__setitem__('config', _structured_scalar(
        config=code)),
    'meta.cfg': lambda c, code: c['meta'].__setitem__('cfg', np.str_(code)),
    'message_hub': lambda c, code: c.__setitem__('message_hub', _structured_scalar(cfg=code)),
    'runtime_info': lambda c, code: c['message_hub'].__setitem__(
        'runtime_info', _structured_scalar(cfg=code)),
    'runtime_info.cfg': lambda c, code: c['message_hub']['runtime_info'].__setitem__(
        'cfg', np.str_(code)),
}


@pytest.mark.parametrize('place', sorted(PLACES))
def test_numpy_scalars_where_config_text_sits_are_refused_on_resume(trained, tmp_path, place):
    """A plain mmengine Runner resuming after ``import mmelsa`` (failed before: meta['config']
    came back as an np.str_ that mmengine executed)."""
    import copy

    from mmengine.runner import Runner
    marker = tmp_path / 'ran'
    ckpt = copy.deepcopy(trained)
    PLACES[place](ckpt, _code(marker))
    path = tmp_path / 'numpy_config.pth'
    torch.save(ckpt, path)
    runner = make_runner(tmp_path / 'resumed', 3, resume=True, load_from=str(path),
                         runner_class=Runner)
    with pytest.raises(UnsafeCheckpointError) as info:
        runner.train()
    assert str(path) in str(info.value) and '\n' not in str(info.value)
    assert not marker.exists()


def test_numpy_scalar_config_is_refused_by_the_train_tool(trained, tmp_path, toy_root):
    """``tools/train.py --resume``: one line, exit 2, nothing run."""
    import copy
    marker = tmp_path / 'ran'
    ckpt = copy.deepcopy(trained)
    PLACES['meta'](ckpt, _code(marker))
    path = tmp_path / 'numpy_config.pth'
    torch.save(ckpt, path)
    from tests.tools.conftest import toy_data_options
    seg = 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py'
    res = subprocess.run(
        [sys.executable, 'tools/train.py', seg, '--work-dir', str(tmp_path / 'w'), '--resume',
         str(path), '--cfg-options', 'train_cfg.max_iters=1', *toy_data_options('seg', toy_root)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode == 2, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and str(path) in last and "['meta']" in last, last
    assert not marker.exists()


@pytest.mark.parametrize('empty', [{}, 'Config'])
def test_inferencer_with_an_empty_config_is_refused(trained, tmp_path, empty):
    """``DetInferencer(model={} or Config(), weights=FILE)``: mmengine builds from the file's
    config text whenever the config is empty (failed before: only ``model=None`` was refused)."""
    from mmdet.apis import DetInferencer
    from mmengine.config import Config
    path = tmp_path / 'w.pth'
    torch.save(trained, path)
    model = Config() if empty == 'Config' else empty
    with pytest.raises(UntrustedConfigError, match='model=CONFIG'):
        DetInferencer(model=model, weights=str(path), device='cpu')


# ------------------------------------------------------------------------------------ trust
class WritesAFile:

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f'open({self.marker!r}, "w").close()', ))


def _evil(path, marker):
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {'x': WritesAFile(marker)}}, path)


def test_a_relative_trust_entry_is_an_error(tmp_path, monkeypatch):
    """Failed before: 'evil.pth' was resolved against the current folder at each check, so a
    same-named file anywhere the tool ran from was trusted."""
    marker = tmp_path / 'ran'
    (tmp_path / 'elsewhere').mkdir()
    _evil(tmp_path / 'elsewhere' / 'model.pth', marker)
    monkeypatch.chdir(tmp_path / 'elsewhere')
    monkeypatch.setenv(TRUST_ENV, 'model.pth')
    with pytest.raises(TrustListError, match="'model.pth' is a relative path"):
        read_checkpoint_file('model.pth')
    assert not marker.exists()


def test_a_trusted_path_is_judged_on_the_opened_file(tmp_path, monkeypatch):
    """The file at a trusted path is swapped for a hostile one at the worst moment (between the
    trust decision and the read): failed before, the second open read the hostile file with a
    full unpickle. Now the decision and the unpickle see the same bytes, and a file whose bytes
    changed since it was first trusted is no longer trusted."""
    from mmelsa.checkpoint import trust as trust_module
    marker = tmp_path / 'ran'
    good = tmp_path / 'model.pth'
    torch.save({'state_dict': {'w': torch.full((2, ), 7.0)}}, good)
    evil = tmp_path / 'evil.pth'
    _evil(evil, marker)
    monkeypatch.setenv(TRUST_ENV, str(good))
    decide = trust_module.TrustList.trusts

    def swap_then_decide(self, *args, **kwargs):
        shutil.copy(evil, tmp_path / 'swap.pth')
        os.replace(tmp_path / 'swap.pth', good)  # the path now names the hostile file
        return decide(self, *args, **kwargs)

    monkeypatch.setattr(trust_module.TrustList, 'trusts', swap_then_decide)
    loaded = read_checkpoint_file(good)  # the bytes opened before the swap
    assert loaded['state_dict']['w'].tolist() == [7.0, 7.0]
    monkeypatch.setattr(trust_module.TrustList, 'trusts', decide)
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint_file(good)  # the hostile file now at that path: not trusted
    assert not marker.exists()


def test_a_url_is_trusted_by_its_exact_url(tmp_path, monkeypatch):
    """Two URLs with the same file name: failed before, both were cached (and trusted) at the
    one path the basename gives, so downloading the hostile one first made it trusted."""
    import torch.hub
    marker = tmp_path / 'ran'
    served = {'https://good.example/models/elsa.pth': tmp_path / 'good.pth',
              'https://evil.example/x/elsa.pth': tmp_path / 'evil.pth'}
    torch.save({'state_dict': {'w': torch.ones(2)}, 'args': argparse.Namespace(lr=0.1)},
               served['https://good.example/models/elsa.pth'])
    _evil(served['https://evil.example/x/elsa.pth'], marker)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    monkeypatch.setattr(torch.hub, 'download_url_to_file',
                        lambda url, dst, **kw: shutil.copy(served[url], dst))
    monkeypatch.setenv(TRUST_ENV, 'https://good.example/models/elsa.pth')
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint('https://evil.example/x/elsa.pth')
    loaded = read_checkpoint('https://good.example/models/elsa.pth')  # trusted: full unpickle
    assert loaded['args'].lr == 0.1  # not plain data: only a trusted file gives it
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):  # still not trusted once both are cached
        read_checkpoint('https://evil.example/x/elsa.pth')
    assert not marker.exists()


def test_open_mmlab_local_mirror_with_torch_forced_to_full_unpickle(tmp_path, monkeypatch):
    """``open-mmlab://`` resolving to a local mirror file, with the common work-around
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``: failed before, mmengine's loader called torch.load,
    which the variable turned into a full unpickle."""
    import mmengine.runner.checkpoint as mm_checkpoint
    from mmengine.runner import load_checkpoint
    marker = tmp_path / 'ran'
    _evil(tmp_path / 'mirror.pth', marker)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    monkeypatch.setattr(mm_checkpoint, 'get_external_models', lambda: {'evil': 'mirror.pth'})
    monkeypatch.setattr(mm_checkpoint, 'get_deprecated_model_names', lambda: {})
    monkeypatch.setattr(mm_checkpoint, '_get_mmengine_home', lambda: str(tmp_path))
    with pytest.raises(UnsafeCheckpointError, match='open-mmlab://evil'):
        load_checkpoint(TinyELSARegressor(), 'open-mmlab://evil')
    assert not marker.exists()


def test_trust_checkpoint_flag_prints_and_trusts_the_digest(tmp_path):
    """``--trust-checkpoint FILE`` trusts FILE's bytes (printed as sha256:<hex>), not its name:
    the same bytes copied elsewhere are trusted, other bytes at the same path are not."""
    legacy = tmp_path / 'legacy.pth'
    torch.save({'model': TinyELSARegressor().backbone.state_dict(),
                'args': WritesAFile(tmp_path / 'ran_is_fine_here')}, legacy)
    res = subprocess.run(
        [sys.executable, 'tools/model_converters/elsa2mmelsa.py', str(legacy),
         str(tmp_path / 'out.pth'), '--trust-checkpoint', str(legacy)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode == 0, res.stderr[-2000:]
    import hashlib
    digest = hashlib.sha256(legacy.read_bytes()).hexdigest()
    assert f'trusting {legacy}: sha256:{digest}' in res.stdout


# ----------------------------------------------------------------------- resource bounds
def _bomb_files(root):
    """Small files that each declared gigabytes before the gate bounded them."""
    files = {}
    # a stride-0 relative position bias: 4 bytes of storage, 3.2 GB once init_cfg=Pretrained
    # resizes it to another window size
    ckpt = TinyELSARegressor().backbone.state_dict()
    key = next(k for k in ckpt if k.endswith('.rb'))
    ckpt[key] = torch.zeros(1).expand(ckpt[key].shape[0], 20001**2)
    torch.save(ckpt, root / 'stride0.pth')
    files['stride0'] = root / 'stride0.pth'
    # a DEFLATE member expanding 1000-fold
    buf = io.BytesIO()
    torch.save({'w': torch.zeros(2**28, dtype=torch.uint8)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(root / 'deflate.pth', 'w') as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), zipfile.ZIP_DEFLATED)
    files['deflate'] = root / 'deflate.pth'
    # an allowlisted-by-torch bytearray of 2 GB in a few hundred bytes
    torch.save({'meta': _Call(bytearray, (2**31, ))}, root / 'bytearray.pth')
    files['bytearray'] = root / 'bytearray.pth'
    # shared lists: 2**40 elements reached through 40 levels of [x, x]
    chain = []
    for _ in range(40):
        chain = [chain, chain]
    torch.save({'state_dict': {}, 'meta': {'chain': chain}}, root / 'chain.pth')
    files['chain'] = root / 'chain.pth'
    return files


class _Call:

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


_UNDER_LIMIT = textwrap.dedent('''
    import resource, sys
    import mmelsa, torch
    from mmelsa.models import ELSASwinTransformer
    from mmelsa.checkpoint import CheckpointError, read_checkpoint_file
    # 600 MB of address space above what the interpreter already maps
    used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 600 * 2**20, resource.RLIM_INFINITY))
    kind, path = sys.argv[1], sys.argv[2]
    try:
        if kind == 'stride0':
            m = ELSASwinTransformer(embed_dims=8, depths=(1, 1), num_heads=(1, 2),
                                    group_width=4, elsa_kernel_size=3, window_size=7,
                                    strides=(4, 2), out_indices=(1, ), elsa_stages=(0, ),
                                    init_cfg=dict(type='Pretrained', checkpoint=path))
            m.init_weights()
        elif kind == 'yaml':
            from mmengine.config import Config
            Config.fromfile(path)
        else:
            read_checkpoint_file(path)
    except MemoryError:
        print('OUT OF MEMORY'); sys.exit(3)
    except Exception as err:
        print('REFUSED', type(err).__name__, err); sys.exit(0)
    print('LOADED'); sys.exit(4)
''')


@pytest.fixture(scope='module')
def bombs(tmp_path_factory):
    root = tmp_path_factory.mktemp('bombs')
    files = _bomb_files(root)
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):  # 9**9 strings through 424 bytes of aliases
        levels.append(f'{chr(97 + i)}: &{chr(97 + i)} [' + ', '.join([f'*{chr(96 + i)}'] * 9)
                      + ']')
    (root / 'bomb.yaml').write_text('\n'.join(levels) + '\n')
    files['yaml'] = root / 'bomb.yaml'
    return files


@pytest.mark.parametrize('kind', ['stride0', 'deflate', 'bytearray', 'chain', 'yaml'])
def test_small_files_cannot_take_all_the_memory(bombs, kind):
    """Each file is read under an address-space limit of 600 MB above the interpreter's: it is
    refused with one line, within seconds (failed before: MemoryError, or minutes of work)."""
    assert osp.getsize(bombs[kind]) < 2**20 or kind == 'deflate'
    res = subprocess.run([sys.executable, '-c', _UNDER_LIMIT, kind, str(bombs[kind])],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith('REFUSED') and '\n' not in line, line
    if kind != 'yaml':
        assert str(bombs[kind]) in line, line


def test_the_memory_limit_catches_a_real_allocation(bombs, tmp_path):
    """Planted bug for the test above: a file that really needs 800 MiB runs out under the limit
    (so the limit is real, and a refusal is the gate's doing)."""
    torch.save({'w': torch.zeros(200 * 2**20)}, tmp_path / 'big.pth')  # 800 MiB
    res = subprocess.run([sys.executable, '-c', _UNDER_LIMIT, 'plain', str(tmp_path / 'big.pth')],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode in (0, 3), res.stderr[-2000:]
    assert 'LOADED' not in res.stdout


def test_stride_zero_checkpoint_via_mmengine_is_refused(tmp_path):
    ckpt = {'state_dict': {'w': torch.zeros(1).expand(10**6)}}
    torch.save(ckpt, tmp_path / 's.pth')
    with pytest.raises(CheckpointTooLargeError, match='declares more data'):
        read_checkpoint_file(tmp_path / 's.pth')


def test_a_folder_given_as_checkpoint_is_one_line(tmp_path):
    from mmelsa.checkpoint import CorruptCheckpointError
    with pytest.raises(CorruptCheckpointError, match='is not a file'):
        read_checkpoint_file(tmp_path)
