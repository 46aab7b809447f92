"""Registration of ELSASwinTransformer into mmdet's and mmseg's MODELS registries."""
import os.path as osp
import types

import pytest
import torch
from mmengine.registry import Registry

import mmelsa.registry as elsa_registry
from mmelsa.models import ELSASwinTransformer

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
SMALL = dict(type='ELSASwinTransformer', embed_dims=24, depths=(1, 1, 1, 2),
             num_heads=(1, 2, 2, 4), group_width=4, out_indices=(0, 3))


def _fake_importer(modules):
    """import_module stand-in: ``modules`` maps a name to a module or to an exception."""

    def import_module(name):
        found = modules[name]
        if isinstance(found, BaseException):
            raise found
        return found

    return import_module


def test_missing_package_is_skipped_silently(monkeypatch, recwarn):
    fake_det = types.SimpleNamespace(MODELS=Registry('fake_det_models'))
    missing = ModuleNotFoundError("No module named 'mmseg'", name='mmseg')
    monkeypatch.setattr(elsa_registry.importlib, 'import_module',
                        _fake_importer({'mmdet.registry': fake_det, 'mmseg.registry': missing}))
    monkeypatch.setattr(elsa_registry, 'REGISTERED_INTO', [])
    assert elsa_registry.register_all() == ['mmdet.registry']
    assert fake_det.MODELS.get('ELSASwinTransformer') is ELSASwinTransformer
    assert not [w for w in recwarn if 'mmelsa' in str(w.message)]
    # idempotent: registering again (e.g. a second import) is fine
    assert elsa_registry.register_all() == ['mmdet.registry']


def test_broken_package_warns_but_does_not_block_the_other(monkeypatch):
    fake_seg = types.SimpleNamespace(MODELS=Registry('fake_seg_models'))
    broken = AssertionError('MMCV==9.9 is used but incompatible')
    monkeypatch.setattr(elsa_registry.importlib, 'import_module',
                        _fake_importer({'mmdet.registry': broken, 'mmseg.registry': fake_seg}))
    monkeypatch.setattr(elsa_registry, 'REGISTERED_INTO', [])
    with pytest.warns(UserWarning, match='mmdet.registry could not be imported'):
        assert elsa_registry.register_all() == ['mmseg.registry']
    assert fake_seg.MODELS.get('ELSASwinTransformer') is ELSASwinTransformer
    # a dependency of the package missing is a broken install too, not an absent one
    dep = ModuleNotFoundError("No module named 'ftfy'", name='ftfy')
    monkeypatch.setattr(elsa_registry.importlib, 'import_module',
                        _fake_importer({'mmdet.registry': fake_seg, 'mmseg.registry': dep}))
    with pytest.warns(UserWarning, match='ftfy'):
        elsa_registry.register_all()


def _forward_backward(model):
    model.train()
    img = torch.randn(1, 3, 45, 61)
    outs = model(img)
    assert [o.shape for o in outs] == [(1, 24, 12, 16), (1, 192, 2, 2)]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('package', ['mmdet', 'mmseg'])
def test_build_through_downstream_registry(package):
    pytest.importorskip(package)
    import importlib
    registry = importlib.import_module(package + '.registry').MODELS
    elsa_registry.register_all()
    assert registry.get('ELSASwinTransformer') is ELSASwinTransformer
    model = registry.build(dict(SMALL))
    assert isinstance(model, ELSASwinTransformer)
    _forward_backward(model)


def test_importing_mmelsa_registers():
    """``custom_imports=dict(imports=['mmelsa'])`` must be enough: importing the package alone
    (in a fresh interpreter) imports mmelsa.registry, which binds the backbone."""
    import subprocess
    import sys
    code = ('import sys, mmelsa; '
            'assert "mmelsa.registry" in sys.modules, "mmelsa does not import registry"; '
            'assert "mmelsa.models" in sys.modules')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]


def test_builds_while_the_default_scope_is_mmengine():
    """After a plain mmengine Runner exists, the current default scope is 'mmengine', and
    mmdet's MODELS.build looks only in mmengine's root registry."""
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    DefaultScope.get_instance('mmelsa_test_root_scope', scope_name='mmengine')
    model = MODELS.build(dict(SMALL))
    assert isinstance(model, ELSASwinTransformer)
