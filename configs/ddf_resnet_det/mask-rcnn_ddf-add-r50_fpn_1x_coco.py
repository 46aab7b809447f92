# Mask R-CNN with a DDF-add-ResNet-50 backbone: the DDF-mul config with the other combination.
_base_ = './mask-rcnn_ddf-mul-r50_fpn_1x_coco.py'

pretrained = 'checkpoints/ddf-add-resnet50_in1k.pth'  # placeholder, see README.md
model = dict(
    backbone=dict(kernel_combine='add',
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
