# Mask R-CNN, ELSA-Swin-T, 36 epochs. mmdet's Swin-T recipe (AdamW lr 1e-4 wd 0.05,
# multi-scale 480-800 with the DETR-style random-crop branch, AMP, batch 16 = 8 GPUs x 2)
# with the backbone swapped; ELSA's published: 47.5 box AP / 42.7 mask AP.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'
custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
# mmelsa's Runner: refuses checkpoints that do not fit and work dirs it would overwrite
# (mmelsa/engine/runner.py); mmdet's / mmseg's own tools build it from this key too.
runner_type = 'SafeRunner'

# Placeholder: put the official ImageNet-1K ELSA-Swin-T checkpoint here (official key names
# are converted on load), or pass model.backbone.init_cfg.checkpoint=... (see README.md).
pretrained = 'checkpoints/elsa_swin_tiny_in1k.pth'
model = dict(
    backbone=dict(
        type='ELSASwinTransformer',
        elsa_kernel_size=7,
        group_width=4,  # tiny: 4, small/base: 8
        drop_path_rate=0.2,
        convert_weights=False,  # mmdet's Swin-key conversion; ELSA names are converted on load
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

# No weight decay on LayerNorms (norm, norm1, norm2, norm0-3, patch_embed.norm,
# downsample.norm: the "norm" substring), on the stage-4 relative position table (attn.rb)
# and on the ELSA ghost head (a learned per-channel, per-tap additive term on the attention
# weights: a position table in all but name, so it is treated like rb). Keys match parameter
# names by substring; tests/tools/test_configs.py checks them against the built backbone.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            '_delete_': True,  # drop the Swin base's keys (absolute_pos_embed, ...)
            'norm': dict(decay_mult=0.),
            'attn.rb': dict(decay_mult=0.),
            'ghost_head': dict(decay_mult=0.)
        }))
