# UperNet, ELSA-Swin-S, ADE20K 512x512, 160k iterations. Published (ms+flip): 50.4 mIoU.
_base_ = './elsa-swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-amp-160k_ade20k-512x512.py'

pretrained = 'checkpoints/elsa_swin_small_in1k.pth'  # placeholder, see README.md
model = dict(
    backbone=dict(
        depths=[2, 2, 18, 2],
        group_width=8,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
