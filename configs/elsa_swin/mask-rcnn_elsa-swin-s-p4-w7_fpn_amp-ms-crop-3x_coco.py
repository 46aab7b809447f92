# Mask R-CNN, ELSA-Swin-S, 36 epochs. Published: 49.2 box AP / 43.6 mask AP.
_base_ = './mask-rcnn_elsa-swin-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'

pretrained = 'checkpoints/elsa_swin_small_in1k.pth'  # placeholder, see README.md
model = dict(
    backbone=dict(
        depths=[2, 2, 18, 2],
        group_width=8,
        drop_path_rate=0.75,  # ELSA's value for S 3x (heavier than Swin-S's 0.2)
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
