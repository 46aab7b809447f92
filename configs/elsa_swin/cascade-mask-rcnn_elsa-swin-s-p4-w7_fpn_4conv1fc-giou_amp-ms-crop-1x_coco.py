# Cascade Mask R-CNN, ELSA-Swin-S, 12 epochs. Published: 51.6 box AP / 44.4 mask AP.
_base_ = './cascade-mask-rcnn_elsa-swin-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-1x_coco.py'

pretrained = 'checkpoints/elsa_swin_small_in1k.pth'  # placeholder, see README.md
model = dict(
    backbone=dict(
        depths=[2, 2, 18, 2],
        group_width=8,
        # Not stated for Cascade S 1x; the Mask R-CNN S 1x value. Tune if you reproduce.
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
