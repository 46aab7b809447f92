# The embedded default, classification: an ImageClassifier with a reduced ELSA-Swin on the
# generated toy shape set (python -m mmelsa.datasets.toy --out data --kind cls): 12000 / 300
# images of 64 x 64 px, one circle, square or triangle on a textured background, mmpretrain's
# ImageNet layout (meta/{train,val}.txt); 375 iterations an epoch. The set is large because this
# model needs images more than epochs (configs/toy/README.md).
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    './_base_/toy_runtime.py',
]

data_root = 'data/toy_cls'
classes = ('circle', 'square', 'triangle')  # mmelsa.datasets.toy.CLS_CLASSES

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        num_classes=len(classes),
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='ELSASwinTransformer',
        embed_dims=32,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 4, 8],
        window_size=4,  # 64 px / patch 4: 16, 8, 4, 2 maps
        elsa_kernel_size=5,
        group_width=4,
        drop_path_rate=0.0,
        out_indices=(3, ),
        init_cfg=None),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=len(classes),
        in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),  # the shapes stay upright
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]
dataset = dict(type='CustomDataset', data_root=data_root, metainfo=dict(classes=classes),
               with_label=True)
# num_workers=0, so persistent_workers=False: mmpretrain's tools/train.py (`mim train mmpretrain`)
# defaults persistent_workers to True, which torch refuses without workers.
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(**dataset, ann_file='meta/train.txt', data_prefix='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=50,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, ann_file='meta/val.txt', data_prefix='val',
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(
    # lr 2e-4, not the detector's 1e-3, at which this classifier stays at chance
    # (configs/toy/README.md)
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'ghost_head': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=5.0))
max_epochs = 8
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, T_max=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=2)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    # validation metrics logged by iteration: the toy report draws them on the loss's axis
    logger=dict(type='LoggerHook', interval=125, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', interval=2, max_keep_ckpts=1,
                    save_best='accuracy/top1', rule='greater'))
randomness = dict(seed=0, deterministic=False)
