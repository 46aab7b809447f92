# Mask R-CNN, ELSA-Swin-T, 12 epochs (same multi-scale + crop recipe as 3x; ELSA's 1x models
# use it too). Published: 45.7 box AP / 41.1 mask AP.
_base_ = './mask-rcnn_elsa-swin-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'

model = dict(backbone=dict(drop_path_rate=0.1))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]
