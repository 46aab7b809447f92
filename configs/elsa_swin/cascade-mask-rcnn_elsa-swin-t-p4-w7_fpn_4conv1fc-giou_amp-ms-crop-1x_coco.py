# Cascade Mask R-CNN, ELSA-Swin-T, 12 epochs. Published: 49.8 box AP / 43.0 mask AP.
_base_ = './cascade-mask-rcnn_elsa-swin-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'

model = dict(backbone=dict(drop_path_rate=0.0))  # ELSA's value for Cascade T 1x

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]
