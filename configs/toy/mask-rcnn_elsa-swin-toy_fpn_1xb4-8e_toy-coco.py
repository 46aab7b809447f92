# The embedded default: Mask R-CNN with a reduced ELSA-Swin on the generated toy COCO set
# (python -m mmelsa.datasets.toy --out data). Sized to train and test on 2 CPU cores in a few
# minutes; every architectural part of the full model is still exercised (ELSA stages 1-3,
# the Swin stage 4, FPN, RPN, box and mask heads), only narrower and shallower.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    './_base_/toy_runtime.py',
]

data_root = 'data/toy_coco/'
classes = ('circle', 'square', 'triangle')  # mmelsa.datasets.toy.DET_CLASSES
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 128, 255), (255, 200, 0)])
num_classes = len(classes)
img_scale = (160, 128)  # the generated images' size (w, h)
norm_cfg = dict(type='GN', num_groups=16, requires_grad=True)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ELSASwinTransformer',
        embed_dims=32,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 4, 8],
        window_size=7,
        elsa_kernel_size=5,
        group_width=4,
        drop_path_rate=0.0,
        out_indices=(0, 1, 2, 3),
        init_cfg=None),  # trained from scratch: no ImageNet checkpoint needed
    # GroupNorm in the neck and the RoI heads, as mmdet's from-scratch recipes have
    # (mask-rcnn_r50-scratch_fpn_gn-all): without it the un-normalised FPN features drive the
    # box head's fully connected ReLUs dead within a few dozen iterations, and the classifier
    # stays at the class prior (configs/toy/README.md).
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64, norm_cfg=norm_cfg),
    rpn_head=dict(
        in_channels=64,
        feat_channels=64,
        # Objects are 30-60 px: anchors of 32-512 px (scale 8 x strides 4-64); the COCO
        # default is the same scale, but 16 px anchors (scale 4) would only be negatives.
        anchor_generator=dict(scales=[8])),
    roi_head=dict(
        # RoIs of 32-64 px pool from P3 (stride 8) rather than P2, where the features have
        # been through one more stage (the level is log2(size / finest_scale), COCO's
        # finest_scale of 56 suits 112 px and larger objects).
        bbox_roi_extractor=dict(out_channels=64, finest_scale=16),
        # mmdet's Shared4Conv1FCBBoxHead with GroupNorm (its gn-all recipes). No average
        # pooling before the branches: box regression from a pooled vector cannot see where
        # the object lies in its RoI.
        bbox_head=dict(
            type='ConvFCBBoxHead',
            num_shared_convs=4,
            num_shared_fcs=1,
            in_channels=64,
            conv_out_channels=64,
            fc_out_channels=256,
            norm_cfg=norm_cfg,
            num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=64, finest_scale=16),
        mask_head=dict(num_convs=2, in_channels=64, conv_out_channels=64,
                       num_classes=num_classes, norm_cfg=norm_cfg)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=150),  # <= 5 objects per image
        rcnn=dict(sampler=dict(num=32))),  # <= 5 objects: 8 positives is plenty
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# num_workers=0: loading 160x128 JPEGs is cheap, and on 2 cores worker processes would only
# compete with the model for CPU.
train_dataloader = dict(
    # batch 4, not 8: twice the updates for the same images, which this short schedule
    # needs (configs/toy/README.md).
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 8  # 600 images / batch 4 = 150 iterations an epoch: 1200 in all
# Validated before training (_base_/toy_runtime.py) and every 2 epochs.
train_cfg = dict(max_epochs=max_epochs, val_interval=2)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True)
]
# A from-scratch model with batch 4: a larger lr than the ImageNet-initialised recipe's 1e-4,
# but not too large for the ELSA backbone (configs/toy/README.md).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'attn.rb': dict(decay_mult=0.),
            'ghost_head': dict(decay_mult=0.)
        }),
    clip_grad=dict(max_norm=10.0))
auto_scale_lr = dict(enable=False, base_batch_size=4)

default_hooks = dict(
    # by iteration: the validation points share the x axis of the training loss
    logger=dict(interval=10, log_metric_by_epoch=False),
    checkpoint=dict(interval=1, max_keep_ckpts=2))
log_processor = dict(window_size=10)
randomness = dict(seed=0)
