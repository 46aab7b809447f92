# DDF-mul-ResNet-50 on ImageNet-1K, 120 epochs, with the authors' recipe (README.md): mmpretrain's
# ResNet-50 with every Bottleneck's 3x3 convolution a DDFPack. SGD (momentum 0.9, lr 0.4 at batch
# 1024, weight decay 1e-4), 5 warm-up epochs then cosine, label smoothing 0.1, RandAugment m7
# (std 0.5, increasing), random erasing 0.4, mixed precision, BN statistics averaged across GPUs
# after each epoch. Published: 79.1 top-1, 16.8M parameters. What differs: README.md.
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
# mmelsa's Runner: refuses checkpoints that do not fit and work dirs it would overwrite.
runner_type = 'SafeRunner'

model = dict(
    backbone=dict(type='DDFResNet', depth=50, kernel_combine='mul'),
    head=dict(loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original',
                        loss_weight=1.0)))

bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=7, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.4, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=bgr_mean, fill_std=bgr_std),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

# timm's optimizer factory exempts every 1-D parameter from weight decay: norms, biases and the
# DDF channel filters' learnt scale (FilterNorm's `std`).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='SGD', lr=0.4, momentum=0.9, weight_decay=1e-4, nesterov=False),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.,
                       custom_keys={'channel_branch.4.std': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=115, eta_min=1e-5, by_epoch=True, begin=5, end=120),
]
train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)
# The release's `--dist-bn reduce`: BatchNorm running statistics averaged over the GPUs after
# every epoch (per-GPU statistics during the epoch, not SyncBN).
custom_hooks = [dict(type='SyncBuffersHook')]
