# Mask R-CNN, ELSA-Swin-S, 12 epochs. Published: 48.3 box AP / 43.0 mask AP.
_base_ = './mask-rcnn_elsa-swin-t-p4-w7_fpn_amp-ms-crop-1x_coco.py'

pretrained = 'checkpoints/elsa_swin_small_in1k.pth'  # placeholder, see README.md
model = dict(
    backbone=dict(
        depths=[2, 2, 18, 2],
        group_width=8,
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
