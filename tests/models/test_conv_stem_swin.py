"""ConvStemSwinTransformer: mmdet's and mmseg's own Swin with the scaled-ReLU stem as the patch
embedding's projection; without the stem, the toolbox's Swin itself."""
import pytest
import torch
from mmengine.registry import DefaultScope

from mmelsa.models import ConvStem

ARGS = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=7,
            drop_path_rate=0.)


def build(toolbox, **kwargs):
    import mmelsa  # noqa: F401
    registry = __import__(f'{toolbox}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(toolbox):
        return registry.build(dict(type='ConvStemSwinTransformer', **ARGS, **kwargs))


def plain_swin(toolbox):
    backbones = __import__(f'{toolbox}.models.backbones', fromlist=['SwinTransformer'])
    return backbones.SwinTransformer(**ARGS)


@pytest.mark.parametrize('toolbox', ['mmdet', 'mmseg'])
def test_without_the_stem_it_is_the_toolboxs_swin(toolbox):
    ours, theirs = build(toolbox), plain_swin(toolbox)
    assert isinstance(ours, type(theirs))  # a subclass of that toolbox's Swin
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    ours.eval()
    theirs.eval()
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        for a, b in zip(ours(x), theirs(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize('toolbox', ['mmdet', 'mmseg'])
def test_the_stem_reaches_the_patch_stride_and_trains(toolbox):
    model, plain = build(toolbox, conv_stem=dict(stem_channels=(8, 8, 8))), plain_swin(toolbox)
    stem = model.patch_embed.projection
    assert isinstance(stem, ConvStem) and model.patch_embed.norm is not None
    assert [c.stride for c in stem.stem if isinstance(c, torch.nn.Conv2d)] == [(2, 2), (1, 1),
                                                                             (1, 1)]
    assert stem.proj.kernel_size == stem.proj.stride == (2, 2)
    assert 'patch_embed.projection.stem.1.running_mean' in model.state_dict()
    x = torch.randn(2, 3, 65, 97)
    outs = model(x)
    plain.eval()  # the toolboxes' Swin.train() returns None: no chaining
    with torch.no_grad():
        assert [o.shape for o in outs] == [o.shape for o in plain(x)]
    sum(o.mean() for o in outs).backward()
    assert stem.stem[0].weight.grad.abs().sum() > 0
    assert stem.proj.weight.grad.abs().sum() > 0


def test_the_scope_picks_the_toolbox():
    from mmdet.models.backbones import SwinTransformer as DetSwin
    from mmseg.models.backbones import SwinTransformer as SegSwin
    assert isinstance(build('mmdet', conv_stem={}), DetSwin)
    assert isinstance(build('mmseg', conv_stem={}), SegSwin)
    assert not isinstance(build('mmseg'), DetSwin)
