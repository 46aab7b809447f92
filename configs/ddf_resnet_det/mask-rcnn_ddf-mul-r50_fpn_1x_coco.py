# Mask R-CNN with a DDF-mul-ResNet-50 backbone, FPN, 12 epochs on COCO: mmdet's R-50 config with
# the backbone swapped. No published result (README.md).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
# mmelsa's Runner: refuses checkpoints that do not fit and work dirs it would overwrite.
runner_type = 'SafeRunner'

# An ImageNet classifier converted by tools/model_converters/ddf2mmelsa.py (placeholder path)
pretrained = 'checkpoints/ddf-mul-resnet50_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='DDFResNet',
        depth=50,
        kernel_combine='mul',
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
