# ELSA-Swin-T on ImageNet-1K, 300 epochs: mmpretrain's Swin-T recipe (AdamW lr 1e-3 at batch
# 1024, weight decay 0.05, 20-epoch warm-up then cosine, RandAugment m9, Mixup 0.8 / CutMix 1.0,
# label smoothing 0.1, random erasing 0.25, gradient clipping 5) with the backbone swapped and
# the release's batch layout (8 GPUs x 128). Published: 82.7 top-1 (README.md).
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'
custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
# mmelsa's Runner: refuses checkpoints that do not fit and work dirs it would overwrite.
runner_type = 'SafeRunner'

model = dict(
    backbone=dict(
        _delete_=True,  # drop the Swin base's arguments (img_size, ...)
        type='ELSASwinTransformer',
        arch='tiny',
        out_indices=(3, ),  # its output norm is the classifier's final norm
        # as the official classifier (and mmpretrain's Swin): the last stage's 7 x 7 map is one
        # window, not shifted
        pad_small_map=False,
        drop_path_rate=0.2),
    head=dict(in_channels=768))

# No weight decay on norms, biases, the stage-4 relative position table (attn.rb) and the ELSA
# ghost head (an additive position term: treated like rb); norms and biases by the base.
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        '_delete_': True,
        'attn.rb': dict(decay_mult=0.),
        'ghost_head': dict(decay_mult=0.)
    }))
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
