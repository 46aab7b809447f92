"""Registration of ELSASwinTransformer: once, into mmengine's root MODELS, where mmdet's and
mmseg's child registries find it, with either toolbox absent."""
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

from mmelsa.models import ELSASwinTransformer

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
SMALL = dict(type='ELSASwinTransformer', embed_dims=24, depths=(1, 1, 1, 2),
             num_heads=(1, 2, 2, 4), group_width=4, out_indices=(0, 3))


def _forward_backward(model):
    model.train()
    img = torch.randn(1, 3, 45, 61)
    outs = model(img)
    assert [o.shape for o in outs] == [(1, 24, 12, 16), (1, 192, 2, 2)]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('package', ['mmdet', 'mmseg'])
def test_build_through_downstream_registry(package):
    import importlib

    from mmengine.registry import init_default_scope
    import mmelsa  # noqa: F401
    registry = importlib.import_module(package + '.registry').MODELS
    assert registry.get('ELSASwinTransformer') is ELSASwinTransformer
    init_default_scope(package)
    model = registry.build(dict(SMALL))
    assert isinstance(model, ELSASwinTransformer)
    _forward_backward(model)


def _fresh_python(code):
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_importing_mmelsa_registers_without_importing_the_toolboxes():
    """``custom_imports=dict(imports=['mmelsa'])`` is enough, and costs no mmdet / mmseg
    import."""
    _fresh_python(
        'import sys, mmelsa\n'
        'from mmengine.registry import MODELS\n'
        'assert MODELS.get("ELSASwinTransformer") is mmelsa.models.ELSASwinTransformer\n'
        'assert "mmdet" not in sys.modules and "mmseg" not in sys.modules, '
        '[m for m in sys.modules if m.startswith(("mmdet", "mmseg"))]\n')


@pytest.mark.parametrize('present, absent', [('mmdet', 'mmseg'), ('mmseg', 'mmdet')])
def test_drop_in_swap_with_the_other_toolbox_absent(present, absent, tmp_path):
    """The Swin config of one toolbox builds with the ELSA backbone while the other toolbox
    cannot be imported at all."""
    swin_cfg = {'mmdet': 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
                'mmseg': 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_'
                         '8xb2-160k_ade20k-512x512.py'}[present]
    config = tmp_path / 'swap.py'
    config.write_text(f'_base_ = {swin_cfg!r}\n')
    _fresh_python(
        'import sys\n'
        f'sys.modules[{absent!r}] = None  # "import {absent}" now raises ImportError\n'
        'import mmelsa\n'
        'from mmengine.config import Config\n'
        'from mmengine.registry import init_default_scope\n'
        f'cfg = Config.fromfile({str(config)!r})\n'
        'cfg.model.backbone.type = "ELSASwinTransformer"\n'
        'cfg.model.backbone.init_cfg = None\n'
        f'init_default_scope({present!r})\n'
        f'from {present}.registry import MODELS\n'
        f'from {present}.utils import register_all_modules\n'
        'register_all_modules(init_default_scope=False)\n'
        'model = MODELS.build(cfg.model)\n'
        'assert type(model.backbone).__name__ == "ELSASwinTransformer"\n')


def test_builds_while_the_default_scope_is_mmengine():
    """After a plain mmengine Runner exists, the current default scope is 'mmengine', and
    mmdet's MODELS.build looks only in mmengine's root registry."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    DefaultScope.get_instance('mmelsa_test_root_scope', scope_name='mmengine')
    model = MODELS.build(dict(SMALL))
    assert isinstance(model, ELSASwinTransformer)


def test_a_misspelt_backbone_argument_is_named_on_every_path(tmp_path):
    """mmdet's init_detector (and any registry build) with ``embed_dim=`` for ``embed_dims``:
    one line naming the argument and the closest real one (before: a bare "unexpected keyword
    argument" TypeError; only mmelsa's own tools suggested the name)."""
    import os.path as osp

    import pytest
    from mmdet.apis import init_detector
    from mmengine.config import Config

    from mmelsa.models import ELSASwinTransformer
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(
        osp.join(repo, 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py'))
    cfg.model.backbone.embed_dim = cfg.model.backbone.pop('embed_dims')
    with pytest.raises(TypeError, match="has no argument 'embed_dim'; did you mean 'embed_dims'"):
        init_detector(cfg, device='cpu')
    with pytest.raises(TypeError, match="did you mean 'depths'"):
        ELSASwinTransformer(depth=(2, 2, 6, 2))
    built = ELSASwinTransformer(embed_dims=8, depths=(1, 1), num_heads=(1, 2), group_width=4,
                                strides=(4, 2), out_indices=(1, ), elsa_stages=(0, ))
    assert built.embed_dims == 8


@pytest.mark.parametrize('type_name,module,needs', [
    ('ELSAVOLO', 'mmelsa.models.elsa_volo', "needs timm (and torchvision) installed"),
    ('DDFResNet', 'mmelsa.models.ddf_resnet', 'needs mmpretrain installed'),
    ('DDFUpFPN', 'mmelsa.models.fpn_ddfup', 'needs mmdet installed'),
    ('ConvStemVisionTransformer', 'mmelsa.models.conv_stem_vit', 'needs mmpretrain installed'),
    ('ConvStemSwinTransformer', 'mmelsa.models.conv_stem_swin', 'needs that toolbox installed'),
])
def test_lazy_types_say_what_they_need(monkeypatch, type_name, module, needs):
    """A type built on another toolbox is registered as a builder that imports it when a config
    asks for one; without that toolbox the build is one ImportError naming it."""
    from mmengine.registry import MODELS

    import mmelsa.registry
    assert MODELS.get(type_name) is mmelsa.registry.LAZY_BUILDERS[type_name]
    monkeypatch.setitem(sys.modules, module, None)  # the import now fails
    with pytest.raises(ImportError, match=f'^{type_name} is built on .*{re.escape(needs)}'):
        MODELS.build(dict(type=type_name))
