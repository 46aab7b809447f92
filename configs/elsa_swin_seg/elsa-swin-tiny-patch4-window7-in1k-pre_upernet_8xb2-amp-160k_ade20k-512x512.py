# UperNet, ELSA-Swin-T, ADE20K 512x512, 160k iterations, batch 16 (8 GPUs x 2). mmseg's Swin-T
# recipe (AdamW lr 6e-5 wd 0.01, 1500-iteration linear warm-up then poly, drop_path_rate 0.3)
# with the backbone swapped and AMP. Published (ms+flip, i.e. tools/test.py --tta): 47.9 mIoU.
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
# mmelsa's Runner: refuses checkpoints that do not fit and work dirs it would overwrite
# (mmelsa/engine/runner.py); mmdet's / mmseg's own tools build it from this key too.
runner_type = 'SafeRunner'

# Placeholder: the official ImageNet-1K ELSA-Swin-T checkpoint (see README.md).
pretrained = 'checkpoints/elsa_swin_tiny_in1k.pth'
model = dict(
    backbone=dict(
        type='ELSASwinTransformer',
        elsa_kernel_size=7,
        group_width=4,  # tiny: 4, small/base: 8
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

# AMP; no weight decay on LayerNorms, the stage-4 relative position table (attn.rb) and the
# ELSA ghost head (an additive per-tap attention term, i.e. a position table), as for
# detection (configs/elsa_swin/mask-rcnn_elsa-swin-t-p4-w7_fpn_amp-ms-crop-3x_coco.py).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    paramwise_cfg=dict(
        custom_keys={
            '_delete_': True,  # drop the Swin base's absolute_pos_embed / rpb-table keys
            'norm': dict(decay_mult=0.),
            'attn.rb': dict(decay_mult=0.),
            'ghost_head': dict(decay_mult=0.)
        }))
