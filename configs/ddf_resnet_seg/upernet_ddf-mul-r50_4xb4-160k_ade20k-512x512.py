# UperNet with a DDF-mul-ResNet-50 backbone, 160k iterations on ADE20K: mmseg's R-50 config with
# the backbone swapped (mmseg's uses ResNetV1c, the deep-stem variant; DDF-ResNet keeps the
# plain stem its ImageNet weights were trained with). No published result (README.md).
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
# mmelsa's Runner: refuses checkpoints that do not fit and work dirs it would overwrite.
runner_type = 'SafeRunner'

# An ImageNet classifier converted by tools/model_converters/ddf2mmelsa.py (placeholder path)
pretrained = 'checkpoints/ddf-mul-resnet50_in1k.pth'
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='DDFResNet',
        depth=50,
        kernel_combine='mul',
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
