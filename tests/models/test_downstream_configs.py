"""Drop-in use: mmdet's and mmseg's shipped Swin-T configs with only the backbone type swapped
(plus ``custom_imports``) build, run a loss step and a prediction on a tiny synthetic batch.

The configs are read from the installed packages' ``.mim/configs``. ``init_cfg`` is set to
None so nothing is downloaded (the configs point at Swin ImageNet weights).
"""
import os.path as osp

import numpy as np
import pytest
import torch

from tests.models.converter_tool import load_converter

pytestmark = pytest.mark.slow



def _swap_backbone(cfg):
    """The whole change a user makes to a Swin config."""
    cfg.custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
    cfg.model.backbone.type = 'ELSASwinTransformer'
    cfg.model.backbone.init_cfg = None  # the shipped value would download Swin weights
    from mmengine.utils import import_modules_from_strings
    import_modules_from_strings(**cfg.custom_imports)  # what the Runner does with it
    return cfg


def _grads_ok(model):
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    assert backbone and all(p.grad is not None and torch.isfinite(p.grad).all()
                            for p in backbone)


def _converted_checkpoint_loads_strictly(model, tmp_path, meta):
    """An official-style (mmdet 2.x / mmseg 0.x) whole-model checkpoint -> converter -> strict
    load into the freshly built mmelsa model."""
    conv = load_converter()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # the classification-style buffers an official backbone may carry
    state['backbone.layers.3.blocks.1.attn_mask'] = torch.zeros(1, 49, 49)
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save({'meta': meta, 'state_dict': state}, src)
    conv.main([str(src), str(dst)])
    converted = torch.load(dst, weights_only=True)
    for p in model.parameters():
        p.data.zero_()
    model.load_state_dict(converted['state_dict'], strict=True)
    ref = model.backbone.layers[0].blocks[0].attn.ghost_head
    torch.testing.assert_close(ref, state['backbone.layers.0.blocks.0.attn.ghost_head'])
    return converted


def test_mmdet_mask_rcnn_swin_t_config(tmp_path):
    import mmdet
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    path = osp.join(mmdet.__path__[0], '.mim', 'configs', 'swin',
                    'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    cfg = _swap_backbone(Config.fromfile(path))
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model.backbone).__name__ == 'ELSASwinTransformer'
    assert model.backbone.group_width == 4  # the Swin-T values select ELSA-Swin-T

    H, W = 128, 160
    torch.manual_seed(0)
    sample = DetDataSample(metainfo=dict(img_id=0, img_shape=(H, W), ori_shape=(H, W),
                                         pad_shape=(H, W), scale_factor=(1., 1.)))
    gt = InstanceData()
    gt.bboxes = HorizontalBoxes(torch.tensor([[20., 30., 90., 100.], [60., 10., 150., 70.]]))
    gt.labels = torch.tensor([3, 17])
    masks = np.zeros((2, H, W), np.uint8)
    masks[0, 30:100, 20:90] = 1
    masks[1, 10:70, 60:150] = 1
    gt.masks = BitmapMasks(masks, H, W)
    sample.gt_instances = gt
    data = dict(inputs=[torch.randint(0, 256, (3, H, W), dtype=torch.uint8)],
                data_samples=[sample])

    model.train()
    batch = model.data_preprocessor(data, training=True)
    losses = model(**batch, mode='loss')
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(losses)
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    _grads_ok(model)

    model.eval()
    with torch.no_grad():
        preds = model.test_step(data)
    assert len(preds) == 1 and hasattr(preds[0], 'pred_instances')
    assert preds[0].pred_instances.bboxes.shape[-1] == 4

    converted = _converted_checkpoint_loads_strictly(
        model, tmp_path, meta=dict(CLASSES=tuple(f'c{i}' for i in range(80)), epoch=12))
    assert len(converted['meta']['dataset_meta']['classes']) == 80


def test_mmseg_upernet_swin_t_config(tmp_path):
    import mmseg
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    path = osp.join(mmseg.__path__[0], '.mim', 'configs', 'swin',
                    'swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py')
    cfg = _swap_backbone(Config.fromfile(path))
    # Synthetic batch only: pad to the small test images instead of the 512x512 crop, which
    # would make UperNet's 512-channel heads take minutes on a CPU.
    H, W = 64, 96
    cfg.model.data_preprocessor.size = (H, W)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model.backbone).__name__ == 'ELSASwinTransformer'

    torch.manual_seed(0)
    samples = []
    for _ in range(2):  # BatchNorm in the pooling branch needs more than one value
        s = SegDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, H, W)))
        samples.append(s)
    data = dict(inputs=[torch.randint(0, 256, (3, H, W), dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)

    model.train()
    batch = model.data_preprocessor(data, training=True)
    losses = model(**batch, mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    _grads_ok(model)

    model.eval()
    with torch.no_grad():
        preds = model.test_step(data)
    assert preds[0].pred_sem_seg.data.shape == (1, H, W)

    _converted_checkpoint_loads_strictly(model, tmp_path, meta=dict(CLASSES=('a', 'b'),
                                                                    PALETTE=[[1, 2, 3]] * 2))
