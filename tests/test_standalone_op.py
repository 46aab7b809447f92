"""The operator stands on its own: ``import mmelsa.ops`` needs torch alone (no mmengine, no
patches), and an mmengine outside the supported range leaves the operator working while any use
of mmelsa through OpenMMLab fails with the one-line version error (before: ``import mmelsa.ops``
ran the mmengine integration and raised ImportError with such an mmengine, and failed without
one)."""
import os
import os.path as osp
import subprocess
import sys
import textwrap

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

_OP_WORKS = '''
import torch
from mmelsa.ops import elsa_attention
from mmelsa.ops.reference import elsa_reference
x = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True)
attn = torch.randn(1, 2, 9, 6, 6, dtype=torch.float64, requires_grad=True)
out = elsa_attention(x, attn, kernel_size=3)
ref = elsa_reference(x, attn, kernel_size=3)
torch.testing.assert_close(out, ref)
gx, ga = torch.autograd.grad(out.sum(), (x, attn))
rx, ra = torch.autograd.grad(ref.sum(), (x, attn))
torch.testing.assert_close(gx, rx)
torch.testing.assert_close(ga, ra)
print('OP OK')
'''


def _run(prelude, after=''):
    code = textwrap.dedent(prelude) + _OP_WORKS + textwrap.dedent(after)
    return subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=REPO))


def test_the_operator_imports_and_runs_without_mmengine():
    res = _run('''
        import sys
        class NoMMEngine:
            def find_spec(self, name, path=None, target=None):
                if name == 'mmengine' or name.startswith('mmengine.'):
                    raise ImportError('mmengine is not installed here')
        sys.meta_path.insert(0, NoMMEngine())
        import mmelsa.ops
        assert not any(m.startswith(('mmengine', 'mmdet', 'mmseg', 'mmpretrain'))
                       for m in sys.modules), sorted(sys.modules)
    ''')
    assert res.returncode == 0 and 'OP OK' in res.stdout, res.stderr[-3000:]


def test_an_unsupported_mmengine_leaves_the_operator_and_refuses_openmmlab_use():
    res = _run('''
        import mmengine
        mmengine.__version__ = '0.9.1'  # outside mmengine>=0.10.7,<0.11
        import mmelsa.ops
    ''', after='''
        from mmengine.registry import MODELS, RUNNERS
        for registry, cfg in ((MODELS, dict(type='ELSASwinTransformer')),
                              (RUNNERS, dict(runner_type='SafeRunner', model=None))):
            try:
                registry.build(cfg)
            except ImportError as err:
                message = str(err)
                assert 'mmengine>=0.10.7,<0.11' in message and '0.9.1' in message, message
                assert '\\n' not in message, message
            else:
                raise AssertionError(f'{cfg} was built with an unsupported mmengine')
        import mmelsa.engine.patches as patches
        assert not patches._installed
        print('REFUSED OK')
    ''')
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert 'OP OK' in res.stdout and 'REFUSED OK' in res.stdout
