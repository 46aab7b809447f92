"""Official checkpoints (ImageNet, mmdet 2.x, mmseg 0.x layouts) through the loader
(init_cfg Pretrained / deprecated pretrained) and through tools/model_converters/elsa2mmelsa.py."""

import os

import pytest
import torch

import mmelsa.models.official_weights as ckpt_mod
from mmelsa.models import ELSASwinTransformer, convert_backbone_state_dict
from tests.models.converter_tool import load_converter
from tests.models.elsa_swin_reference import random_state_dict

ARCH = dict(embed_dims=24, depths=(2, 1, 1, 2), num_heads=(1, 2, 2, 4), group_width=4)


@pytest.fixture(scope='module')
def official():
    """A backbone state dict in the official layout with random (float32) values."""
    model = ELSASwinTransformer(**ARCH)
    return {k: v.float() if v.is_floating_point() else v
            for k, v in random_state_dict(model, seed=5).items()}


def imagenet_extras(sd):
    """What the classification release adds: head, final norm, per-block attn_mask."""
    out = dict(sd)
    out['norm.weight'] = torch.ones(192)
    out['norm.bias'] = torch.zeros(192)
    out['head.weight'] = torch.randn(1000, 192)
    out['head.bias'] = torch.zeros(1000)
    for i, depth in enumerate(ARCH['depths']):
        for j in range(depth):
            out[f'layers.{i}.blocks.{j}.attn_mask'] = torch.zeros(4, 49, 49)
    for i in range(4):  # the classifier has no per-stage output norms
        out.pop(f'norm{i}.weight')
        out.pop(f'norm{i}.bias')
    return out


def detector_layout(sd):
    """mmdet 2.x / mmseg 0.x: backbone.-prefixed, next to neck/head weights, with meta."""
    state = {'backbone.' + k: v for k, v in sd.items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.randn(8, 24, 1, 1)
    state['rpn_head.rpn_conv.bias'] = torch.randn(8)
    return {'meta': {'CLASSES': ('a', 'b'), 'epoch': 12, 'mmdet_version': '2.11.0'},
            'state_dict': state, 'optimizer': {'state': {}, 'param_groups': []}}


def layouts(sd):
    ext = imagenet_extras(sd)
    return {
        'imagenet_top_level': (ext, False),
        'imagenet_under_model': ({'model': ext, 'epoch': 300}, False),
        'imagenet_under_state_dict': ({'state_dict': ext}, False),
        'dataparallel': ({'state_dict': {'module.' + k: v for k, v in ext.items()}}, False),
        'mmdet2': (detector_layout(sd), True),
        'plain_backbone': (sd, True),
    }


def _assert_loaded(model, sd, with_out_norms):
    own = model.state_dict()
    for k, v in sd.items():
        if not with_out_norms and k.startswith(('norm0.', 'norm1.', 'norm2.', 'norm3.')):
            continue
        torch.testing.assert_close(own[k], v, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize('layout', ['imagenet_top_level', 'imagenet_under_model',
                                    'imagenet_under_state_dict', 'dataparallel', 'mmdet2',
                                    'plain_backbone'])
def test_init_cfg_pretrained_loads_every_layout(official, tmp_path, layout, monkeypatch):
    ckpt, has_out_norms = layouts(official)[layout]
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    logs = []
    monkeypatch.setattr(ckpt_mod, 'print_log', lambda msg, *a, **k: logs.append(msg))
    model = ELSASwinTransformer(**ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    _assert_loaded(model, official, has_out_norms)
    text = '\n'.join(logs)
    if has_out_norms:
        assert 'Missing keys' not in text and 'Unexpected keys' not in text
    else:
        # the classification file has no output norms: reported, and they keep their init
        assert 'Missing keys' in text and 'norm0.weight' in text
        assert torch.all(model.norm0.weight == 1)
        assert 'Unexpected keys' not in text  # head/norm/attn_mask are dropped, not unexpected


def test_deprecated_pretrained_argument(official, tmp_path):
    path = tmp_path / 'in1k.pth'
    torch.save(imagenet_extras(official), path)
    with pytest.warns(UserWarning, match='pretrained is deprecated'):
        model = ELSASwinTransformer(**ARCH, pretrained=str(path))
    assert model.init_cfg == dict(type='Pretrained', checkpoint=str(path))
    model.init_weights()
    _assert_loaded(model, official, with_out_norms=False)


def test_loader_reports_missing_unexpected_and_mismatched(official, monkeypatch):
    logs = []
    monkeypatch.setattr(ckpt_mod, 'print_log', lambda msg, *a, **k: logs.append(msg))
    sd = dict(official)
    sd.pop('layers.0.blocks.0.attn.ghost_head')
    sd['layers.0.blocks.0.extra'] = torch.zeros(1)
    sd['layers.1.blocks.0.mlp.fc1.bias'] = torch.zeros(7)
    model = ELSASwinTransformer(**ARCH)
    with pytest.raises(ckpt_mod.CheckpointMismatchError, match='another shape'):
        ckpt_mod.load_official_weights(model, sd)
    result = ckpt_mod.load_official_weights(model, sd, allow_partial=True)
    text = '\n'.join(logs)
    assert 'layers.0.blocks.0.attn.ghost_head' in result.missing_keys
    assert 'layers.0.blocks.0.extra' in result.unexpected_keys
    assert 'Missing keys' in text and 'Unexpected keys' in text
    assert 'Size mismatch' in text and 'layers.1.blocks.0.mlp.fc1.bias' in text


def test_prefix_in_init_cfg(official, tmp_path):
    path = tmp_path / 'det.pth'
    torch.save(detector_layout(official), path)
    init_cfg = dict(type='Pretrained', checkpoint=str(path), prefix='backbone.')
    model = ELSASwinTransformer(**ARCH, init_cfg=init_cfg)
    model.init_weights()
    _assert_loaded(model, official, True)


def test_window_size_change_resizes_relative_bias(official):
    model = ELSASwinTransformer(**ARCH, window_size=5)
    ckpt_mod.load_official_weights(model, official)
    rb = model.layers[3].blocks[0].attn.rb
    assert rb.shape == (4, 81)
    assert model.layers[3].blocks[0].attn.relative_id.shape == (625, )
    # the ELSA stages are unaffected by the window size
    torch.testing.assert_close(model.layers[0].blocks[0].attn.ghost_head,
                               official['layers.0.blocks.0.attn.ghost_head'])


def swin_layout(sd):
    """What a plain Swin Transformer checkpoint of the same size looks like: qkv / proj /
    relative_position_bias_table attention weights instead of ELSA's."""
    out = {}
    for k, v in sd.items():
        if '.attn.' in k:
            stem = k.split('.attn.')[0]
            out[f'{stem}.attn.qkv.weight'] = torch.zeros(3, 3)
            out[f'{stem}.attn.proj.weight'] = torch.zeros(3, 3)
            out[f'{stem}.attn.relative_position_bias_table'] = torch.zeros(169, 3)
        else:
            out[k] = v
    return out


def test_swin_checkpoint_is_refused_unless_partial_is_asked_for(official, tmp_path,
                                                                monkeypatch):
    path = tmp_path / 'swin_tiny.pth'
    torch.save({'model': swin_layout(imagenet_extras(official))}, path)
    init_cfg = dict(type='Pretrained', checkpoint=str(path))
    model = ELSASwinTransformer(**ARCH, init_cfg=init_cfg)
    with pytest.raises(ckpt_mod.CheckpointMismatchError) as info:
        model.init_weights()
    msg = str(info.value)
    assert 'Swin Transformer checkpoint, not an ELSA-Swin one' in msg and str(path) in msg
    assert 'allow_partial=True' in msg
    logs = []
    monkeypatch.setattr(ckpt_mod, 'print_log', lambda m, *a, **k: logs.append(m))
    model = ELSASwinTransformer(**ARCH, init_cfg=dict(init_cfg, allow_partial=True))
    model.init_weights()
    own = model.state_dict()
    from_file = [k for k in swin_layout(imagenet_extras(official)) if k in own]
    assert from_file and all('.attn.' not in k for k in from_file)
    # the log states exactly how many tensors came from the file
    assert f'Loaded {len(from_file)} of the {len(own)} backbone tensors from {path}' in logs


def test_another_model_size_is_refused(official):
    small = ELSASwinTransformer(embed_dims=32, depths=(2, 1, 1, 2), num_heads=(1, 2, 2, 4),
                                group_width=4)
    with pytest.raises(ckpt_mod.CheckpointMismatchError, match='another shape'):
        ckpt_mod.load_official_weights(small, official)


def test_a_deeper_models_weights_are_refused(official):
    """Every tensor of a shallower model is in a deeper model's file with its shape: the
    blocks the model has not must refuse the file, not be dropped with a warning (failed
    before: 'Loaded N of the N' and a WARNING)."""
    assert ARCH['depths'][0] == 2
    model = ELSASwinTransformer(**dict(ARCH, depths=(1, ) + tuple(ARCH['depths'][1:])))
    assert all(official[k].shape == v.shape for k, v in model.state_dict().items())
    with pytest.raises(ckpt_mod.CheckpointMismatchError, match='deeper model') as info:
        ckpt_mod.load_official_weights(model, official)
    assert 'layers.0.blocks.1.' in str(info.value)
    ckpt_mod.load_official_weights(model, official, allow_partial=True)  # asked for: loads


def test_url_checkpoint_is_downloaded_once_and_loaded_weights_only(
        official, tmp_path, monkeypatch):
    import shutil

    import torch.hub
    src = tmp_path / 'served.pth'
    torch.save(imagenet_extras(official), src)
    calls = []

    def fake_download(url, dst, progress=True):
        calls.append(url)
        shutil.copy(src, dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake_download)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    url = 'https://example.com/ckpts/elsa_swin_t_in1k.pth'
    for _ in range(2):
        model = ELSASwinTransformer(**ARCH, init_cfg=dict(type='Pretrained', checkpoint=url))
        model.init_weights()
        _assert_loaded(model, official, with_out_norms=False)
    assert calls == [url]  # cached after the first time
    # in a folder of its own per URL: another URL's same-named file never takes its place
    from mmelsa.checkpoint import cached_path
    cached = cached_path(url)
    assert cached.startswith(str(tmp_path / 'hub' / 'checkpoints')) and os.path.isfile(cached)
    assert cached != cached_path('https://other.example/elsa_swin_t_in1k.pth')


def test_missing_file_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match='no_such.pth'):
        ckpt_mod.read_checkpoint('/nonexistent/no_such.pth')


def test_convert_backbone_state_dict_drops_only_classification_extras(official):
    converted, dropped = convert_backbone_state_dict({'model': imagenet_extras(official)})
    assert 'head.weight' in dropped and 'norm.bias' in dropped
    assert 'layers.0.blocks.1.attn_mask' in dropped
    assert all(not k.startswith(('head.', 'norm.')) for k in converted)
    assert set(converted) == {k for k in official if not k.startswith('norm')} | \
        {k for k in official if k.startswith('norm') and k[4] not in '0123'}


# --------------------------------------------------------------------------- converter tool
def test_converter_imagenet_file_backbone_only_loads_strictly(official, tmp_path):
    src, dst = tmp_path / 'in1k.pth', tmp_path / 'out' / 'in1k_mmelsa.pth'
    sd = imagenet_extras(official)
    torch.save({'model': sd}, src)
    load_converter().main([str(src), str(dst), '--backbone-only'])
    out = torch.load(dst, weights_only=True)
    model = ELSASwinTransformer(**ARCH, out_indices=())  # classification: no output norms
    model.load_state_dict(out['state_dict'], strict=True)
    _assert_loaded(model, official, with_out_norms=False)


def test_converter_detector_file_keeps_neck_heads_and_meta(official, tmp_path):
    src, dst = tmp_path / 'coco.pth', tmp_path / 'coco_mmelsa.pth'
    ckpt = detector_layout(official)
    ckpt['state_dict']['backbone.layers.3.blocks.1.attn_mask'] = torch.zeros(1, 49, 49)
    torch.save(ckpt, src)
    load_converter().main([str(src), str(dst)])
    out = torch.load(dst, weights_only=True)
    sd = out['state_dict']
    assert 'neck.lateral_convs.0.conv.weight' in sd and 'rpn_head.rpn_conv.bias' in sd
    assert not any(k.endswith('attn_mask') for k in sd)
    backbone = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    model = ELSASwinTransformer(**ARCH)
    model.load_state_dict(backbone, strict=True)
    _assert_loaded(model, official, True)
    assert out['meta']['epoch'] == 12 and out['meta']['CLASSES'] == ('a', 'b')
    assert out['meta']['dataset_meta'] == {'classes': ('a', 'b')}


def test_converter_output_is_loadable_by_the_backbone_loader(official, tmp_path):
    src, dst = tmp_path / 'ade.pth', tmp_path / 'ade_mmelsa.pth'
    torch.save(detector_layout(official), src)
    load_converter().main([str(src), str(dst)])
    model = ELSASwinTransformer(**ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    _assert_loaded(model, official, True)


def test_absolute_pos_embed_checkpoints(official):
    """A model with an absolute position embedding starts from weights without one (it keeps
    its initialisation, as in mmdet's Swin) and loads its own strictly; a file with one is
    refused by a model without one, naming the option."""
    model = ELSASwinTransformer(**ARCH, use_abs_pos_embed=True, pretrain_img_size=32)
    own_init = model.absolute_pos_embed.detach().clone()
    ckpt_mod.load_official_weights(model, official)
    torch.testing.assert_close(model.layers[0].blocks[0].attn.ghost_head.detach(),
                               official['layers.0.blocks.0.attn.ghost_head'])
    assert torch.equal(model.absolute_pos_embed.detach(), own_init)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    saved['absolute_pos_embed'] = torch.randn_like(saved['absolute_pos_embed'])
    again = ELSASwinTransformer(**ARCH, use_abs_pos_embed=True, pretrain_img_size=32)
    ckpt_mod.load_official_weights(again, saved)
    assert torch.equal(again.absolute_pos_embed.detach(), saved['absolute_pos_embed'])
    with pytest.raises(ckpt_mod.CheckpointMismatchError, match='use_abs_pos_embed=True'):
        ckpt_mod.load_official_weights(ELSASwinTransformer(**ARCH), saved)
    with pytest.raises(ckpt_mod.CheckpointMismatchError, match='absolute_pos_embed'):
        ckpt_mod.load_official_weights(
            ELSASwinTransformer(**ARCH, use_abs_pos_embed=True, pretrain_img_size=64), saved)
