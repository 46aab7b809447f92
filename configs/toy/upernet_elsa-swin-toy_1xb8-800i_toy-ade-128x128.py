# The embedded default, segmentation: UperNet with a reduced ELSA-Swin on the generated toy
# ADE20K-format set (python -m mmelsa.datasets.toy --out data). Labels are ADE-style: 0 is
# "unlabelled" and reduce_zero_label maps it to 255 (ignored), classes 1..5 to 0..4.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/toy_runtime.py',
]

data_root = 'data/toy_ade'
crop_size = (128, 128)
classes = ('wall', 'floor', 'circle', 'square', 'triangle')  # mmelsa.datasets.toy.SEG_CLASSES
metainfo = dict(classes=classes, palette=[(120, 120, 120), (80, 50, 50), (220, 20, 60),
                                          (0, 128, 255), (255, 200, 0)])
num_classes = len(classes)
# Plain BN instead of the base's SyncBN: SyncBN has no CPU kernel, and a non-distributed
# run would convert it anyway.
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='ELSASwinTransformer',
        embed_dims=32,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 4, 8],
        window_size=7,
        elsa_kernel_size=5,
        group_width=4,
        drop_path_rate=0.0,
        init_cfg=None),
    decode_head=dict(
        in_channels=[32, 64, 128, 256],
        channels=64,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        # Cross entropy plus a Dice term. mmseg 1.2.2's DiceLoss pools all classes of an
        # image into one overlap (it does not weigh classes equally); what makes the shapes
        # separable is in configs/toy/README.md.
        # No class_weight: mmseg 1.2.2's cross entropy crashes on it with ignored pixels.
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            dict(type='DiceLoss', use_sigmoid=False, loss_weight=1.0)
        ]),
    auxiliary_head=dict(in_channels=128, channels=32, num_classes=num_classes,
                        norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
# --tta: 3 scales x flip (the full recipe uses ADE20K's 6 scales).
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.75, 1.0, 1.25)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')]])
]
dataset = dict(
    type='BaseSegDataset',  # ADE layout, our classes: no need for a registered subclass
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8,
    num_workers=0,  # cheap loading; workers would compete with the model on 2 cores
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/validation',
                         seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 800
# Validated before training (_base_/toy_runtime.py) and every quarter of the run.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'attn.rb': dict(decay_mult=0.),
            'ghost_head': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters, by_epoch=False)
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters // 4,
                    max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
log_processor = dict(by_epoch=False, window_size=20)
randomness = dict(seed=0)
