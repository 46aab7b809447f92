"""The conv-stem configs (configs/conv_stem): each builds through mmpretrain with the stem as
its patch embedding, takes a training step, and exports with a plain torch.onnx.export that
ONNX Runtime agrees with."""
import glob
import os.path as osp

import pytest
import torch
from mmengine import Config

from mmelsa.models import ConvStem

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'conv_stem', '*.py')))


def build(path):
    import mmelsa  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(path)
    # as mmengine's Runner does: the config's top-level data_preprocessor is the model's
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return cfg, MODELS.build(cfg.model)


def stem_of(model):
    embed = model.backbone.patch_embed
    return embed if isinstance(embed, ConvStem) else embed.proj


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(p)[:-3] for p in CONFIGS])
def test_config_builds_and_takes_a_training_step(path):
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.structures import DataSample
    cfg, model = build(path)
    assert cfg.custom_imports == dict(imports=['mmelsa'], allow_failed_imports=False)
    stem = stem_of(model)
    assert isinstance(stem, ConvStem)
    before = stem.stem[0].weight.detach().clone()
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    batch = dict(inputs=[torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8)
                         for _ in range(2)],
                 data_samples=[DataSample().set_gt_label(i) for i in (3, 7)])
    model.train()
    losses = model.train_step(batch, wrapper)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert not torch.equal(before, stem.stem[0].weight.detach())


def test_deit_with_the_conv_stem_exports(tmp_path):
    from mmelsa.deployment import OnnxRunner, TensorModeModel
    from mmelsa.ops.reference import max_rel_err
    _, model = build(osp.join(ROOT, 'configs', 'conv_stem', 'deit-tiny-convstem_4xb256_in1k.py'))
    wrapped = TensorModeModel(model, 'model').eval()  # (logits, )
    path = str(tmp_path / 'deit.onnx')
    x = torch.randn(1, 3, 224, 224)
    torch.onnx.export(wrapped, (x, ), path, dynamo=False, opset_version=17, input_names=['x'],
                      dynamic_axes={'x': {0: 'b'}})
    runner = OnnxRunner(path)
    for batch in (1, 2):
        x = torch.randn(batch, 3, 224, 224)
        with torch.no_grad():
            want, = wrapped(x)
        assert max_rel_err(torch.from_numpy(runner(x)[0]), want) < 1e-4
