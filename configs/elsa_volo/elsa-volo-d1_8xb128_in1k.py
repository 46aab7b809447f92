# ELSA-VOLO-D1 on ImageNet-1K at 224 px: VOLO-D1's recipe (AdamW lr 1.6e-3 at batch 1024 =
# 8 GPUs x 128, weight decay 0.05, 20-epoch warm-up from 1e-6, cosine to 1e-5 at epoch 300,
# 10 epochs at 1e-5, RandAugment m9, random erasing 0.25, label smoothing 0.1, no Mixup /
# CutMix, drop path 0.1) without token labelling (README.md). Test: centre crop 224 of the
# image resized to 233 px (VOLO's crop ratio 0.96).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
runner_type = 'SafeRunner'  # mmelsa's Runner (checkpoint-fit and work-dir checks)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ELSAVOLO', arch='d1', img_size=224, drop_path_rate=0.1),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=384,  # the class token
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')))

lr = 1.6e-3
optim_wrapper = dict(
    optimizer=dict(lr=lr),
    paramwise_cfg=dict(custom_keys={  # no decay (as VOLO) on these; norms, biases by the base
        '_delete_': True,
        'pos_embed': dict(decay_mult=0.),
        'cls_token': dict(decay_mult=0.),
        'ghost_head': dict(decay_mult=0.)
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / lr, by_epoch=True, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20, end=300)
]
train_cfg = dict(max_epochs=310)
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=233, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs')
]))
test_dataloader = val_dataloader
