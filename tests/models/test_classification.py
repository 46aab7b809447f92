"""ELSA-Swin as an mmpretrain ImageNet classifier: an official ImageNet checkpoint converted by
tools/model_converters/elsa2mmelsa.py loads strictly and gives the logits of an independent
float64 computation; the ImageNet config runs through tools/test.py on a tiny ImageNet folder."""
import glob
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mmelsa.models import ELSASwinTransformer
from tests.models.converter_tool import load_converter
from tests.models.elsa_swin_reference import backbone_ref, random_state_dict

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
SMALL = dict(embed_dims=24, depths=(2, 1, 1, 2), num_heads=(1, 2, 2, 4), group_width=4)
TINY_CONFIG = osp.join(ROOT, 'configs', 'elsa_swin_cls', 'elsa-swin-tiny_8xb128_in1k.py')


def official_imagenet_state_dict(arch, num_classes, seed, dtype=torch.float64):
    """Random weights under the release's ImageNet key names: backbone keys at top level, the
    final ``norm.*`` (no norm0..norm3), ``head.*`` and an ``attn_mask`` buffer per block."""
    backbone = ELSASwinTransformer(**arch, out_indices=())
    sd = random_state_dict(backbone, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)
    c = backbone.num_features[-1]
    sd['norm.weight'] = 1 + 0.2 * torch.randn(c, generator=g, dtype=dtype)
    sd['norm.bias'] = 0.2 * torch.randn(c, generator=g, dtype=dtype)
    sd['head.weight'] = torch.randn(num_classes, c, generator=g, dtype=dtype) / math.sqrt(c)
    sd['head.bias'] = 0.2 * torch.randn(num_classes, generator=g, dtype=dtype)
    for i, depth in enumerate(backbone.depths):
        for j in range(depth):
            sd[f'layers.{i}.blocks.{j}.attn_mask'] = torch.zeros(1, 49, 49, dtype=dtype)
    return sd


def reference_logits(img, sd, arch):
    """Official classifier in float64: last stage -> norm -> mean over positions -> head,
    with the backbone computed by the independent reference (tests/models/elsa_swin_reference)."""
    ref_sd = dict(sd)
    ref_sd['norm3.weight'], ref_sd['norm3.bias'] = sd['norm.weight'], sd['norm.bias']
    last = backbone_ref(img, ref_sd, depths=arch['depths'], num_heads=arch['num_heads'],
                        out_indices=(3, ), pad_small_map=False)[0]  # normed by 'norm3'
    pooled = last.mean(dim=(2, 3))
    return pooled @ sd['head.weight'].t() + sd['head.bias']


def build_classifier(arch, num_classes):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules

    import mmelsa  # noqa: F401  (registers ELSASwinTransformer into the root MODELS)
    register_all_modules(init_default_scope=False)
    # another test may have left its toolbox as mmengine's default scope, whose registry
    # Registry.build would search first
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return _build(MODELS, arch, num_classes)


def _build(MODELS, arch, num_classes):  # noqa: N803
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='ELSASwinTransformer', **arch, out_indices=(3, ),
                      pad_small_map=False),  # the classifier's rule, as the config
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=arch['embed_dims'] * 8)))


def test_mmpretrain_finds_the_backbone_by_plain_type():
    from mmpretrain.registry import MODELS
    import mmelsa  # noqa: F401
    assert MODELS.get('ELSASwinTransformer') is ELSASwinTransformer


def test_converted_imagenet_checkpoint_loads_strictly_and_matches_float64(tmp_path):
    sd = official_imagenet_state_dict(SMALL, num_classes=10, seed=3)
    src, dst = tmp_path / 'elsa_swin_in1k.pth', tmp_path / 'converted.pth'
    torch.save({'model': sd}, src)
    load_converter().main([str(src), str(dst)])
    converted = torch.load(dst, weights_only=True)['state_dict']
    assert not any(k.endswith('attn_mask') for k in converted)
    assert {'head.fc.weight', 'head.fc.bias', 'backbone.norm3.weight'} <= set(converted)

    model = build_classifier(SMALL, num_classes=10).double().eval()
    result = model.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    # 224 x 224: the last stage's map is one 7 x 7 window, which the official classifier does
    # not shift
    img = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        logits = model(img, mode='tensor')
    torch.testing.assert_close(logits, reference_logits(img, sd, SMALL), rtol=1e-9,
                               atol=1e-9)


def test_backbone_init_cfg_still_loads_the_converted_and_the_original_file(tmp_path):
    sd = official_imagenet_state_dict(SMALL, 10, seed=4, dtype=torch.float32)
    src, dst = tmp_path / 'in1k.pth', tmp_path / 'converted.pth'
    torch.save({'model': sd}, src)
    load_converter().main([str(src), str(dst)])
    for path in (src, dst):
        model = ELSASwinTransformer(**SMALL, init_cfg=dict(type='Pretrained',
                                                           checkpoint=str(path)))
        model.init_weights()
        own = model.state_dict()
        for k, v in sd.items():
            if k.startswith(('head.', 'norm.')) or k.endswith('attn_mask'):
                continue
            torch.testing.assert_close(own[k], v, rtol=0, atol=0, msg=k)


def test_converter_refuses_to_map_a_detector_file_as_a_classifier():
    from mmelsa.models.official_weights import convert_classifier_state_dict
    with pytest.raises(ValueError, match='ImageNet classifier'):
        convert_classifier_state_dict({'state_dict': {'backbone.patch_embed.proj.weight':
                                                      torch.zeros(1)}})


def _imagenet_val_folder(root, images):
    """An ImageNet-style folder (val/ plus meta/val.txt) holding ``images`` (uint8 RGB, 256 px)
    with the labels given."""
    os.makedirs(osp.join(root, 'val'))
    os.makedirs(osp.join(root, 'meta'))
    lines = []
    for i, (rgb, label) in enumerate(images):
        name = f'ILSVRC2012_val_{i:08d}.png'
        Image.fromarray(rgb).save(osp.join(root, 'val', name))
        lines.append(f'{name} {label}')
    with open(osp.join(root, 'meta', 'val.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def test_tools_test_reports_the_top1_of_a_converted_checkpoint(tmp_path):
    """The ELSA-Swin-T ImageNet config, a converted (random) official ELSA-Swin-T checkpoint and
    4 validation images: two labelled with the reference's prediction, two with another class,
    so tools/test.py must report 50% top-1."""
    arch = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), group_width=4)
    sd = official_imagenet_state_dict(arch, num_classes=1000, seed=7, dtype=torch.float32)
    src, ckpt = tmp_path / 'elsa_swin_tiny_in1k.pth', tmp_path / 'converted.pth'
    torch.save({'model': sd}, src)
    load_converter().main([str(src), str(ckpt)])

    rng = np.random.default_rng(0)
    rgbs = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(4)]
    # The config's test pipeline: 256 px short edge (a no-op here), centre crop 224, RGB,
    # mean / std normalisation.
    mean = torch.tensor([123.675, 116.28, 103.53], dtype=torch.float64)
    std = torch.tensor([58.395, 57.12, 57.375], dtype=torch.float64)
    batch = torch.stack([(torch.from_numpy(x[16:240, 16:240]).double() - mean) / std
                         for x in rgbs]).permute(0, 3, 1, 2)
    sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    logits = reference_logits(batch, sd64, arch)
    top2 = logits.topk(2, dim=1).values
    assert (top2[:, 0] - top2[:, 1]).min() > 1e-3  # float32 cannot flip the prediction
    pred = logits.argmax(dim=1).tolist()
    labels = [pred[0], pred[1], (pred[2] + 1) % 1000, (pred[3] + 500) % 1000]
    data = tmp_path / 'imagenet'
    _imagenet_val_folder(str(data), list(zip(rgbs, labels)))

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'test.py'), TINY_CONFIG, str(ckpt),
         '--work-dir', str(tmp_path / 'work'), '--cfg-options',
         f'test_dataloader.dataset.data_root={data}', 'test_dataloader.batch_size=2',
         'test_dataloader.num_workers=0'],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = re.search(r'^mmelsa-metrics: (.*)$', proc.stdout, re.M)
    assert line, proc.stdout[-3000:]
    metrics = json.loads(line.group(1))
    assert metrics['accuracy/top1'] == pytest.approx(50.0)
    assert metrics['accuracy/top5'] >= 50.0


def test_reference_pipeline_assumption_centre_crop_of_256():
    """The test above feeds the reference the centre 224 crop of a 256 px image; check against
    mmpretrain's own test transforms that this is what the config's pipeline produces."""
    from mmengine.config import Config
    from mmengine.dataset import Compose
    from mmpretrain.registry import TRANSFORMS  # noqa: F401  (registers the transforms)
    import mmpretrain.datasets  # noqa: F401
    cfg = Config.fromfile(TINY_CONFIG)
    steps = [t for t in cfg.test_dataloader.dataset.pipeline
             if t['type'] not in ('LoadImageFromFile', 'PackInputs')]
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    pipeline = Compose(steps)
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = pipeline(dict(img=bgr, img_shape=bgr.shape[:2], ori_shape=bgr.shape[:2]))
    np.testing.assert_array_equal(out['img'], bgr[16:240, 16:240])


CLS_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'elsa_swin_cls', '*.py')) +
                     glob.glob(osp.join(ROOT, 'configs', 'elsa_volo', '*.py')))


@pytest.mark.parametrize('path', CLS_CONFIGS, ids=[osp.basename(p)[:-3] for p in CLS_CONFIGS])
def test_imagenet_config_builds_and_exempts_exactly_the_intended_parameters(path):
    """Each ImageNet config builds its classifier through mmpretrain (as tools/train.py does),
    with the head width the backbone gives; AdamW's weight decay is off exactly for norms
    (the conv mixers' BatchNorms and DDF's filter scale ``std`` included: one-dimensional, like
    every norm and bias), biases, the relative position tables, the ghost head, VOLO's position
    embedding and class token, and on for every other parameter; every no-decay key names a
    real parameter."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    import mmelsa  # noqa: F401
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['mmelsa'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmpretrain' and cfg.auto_scale_lr.base_batch_size == 1024
    assert cfg.train_dataloader.batch_size * 8 == 1024
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    width = model.backbone.num_features[-1] if hasattr(model.backbone, 'layers') \
        else model.backbone.num_features
    assert model.head.fc.in_features == width and model.head.fc.out_features == 1000
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    by_id = {id(p): n for n, p in model.named_parameters()}
    decay = {by_id[id(p)]: g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    assert set(decay) == set(by_id.values())
    intended = {n for n, p in model.named_parameters()
                if p.dim() == 1 or n.endswith(('.attn.rb', 'ghost_head', 'pos_embed',
                                               'cls_token'))}
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert not [k for k in keys if not any(k in n for n in by_id.values())], keys
    # The intended set is not vacuous: each local mixer's own no-decay parameters are in it.
    own = {'elsa': 'ghost_head', 'window': 'layers.0.blocks.0.attn.rb',
           'dwconv': 'layers.0.blocks.0.mixer.bn.weight',
           'ddf': 'layers.0.blocks.0.mixer.spatial.channel_branch.4.std'}
    assert any(own[cfg.model.backbone.get('local_mixer', 'elsa')] in n for n in intended)
    wrong = sorted(n for n, wd in decay.items() if (wd == 0) != (n in intended))
    assert not wrong, wrong
