# DeiT-S with the scaled-ReLU convolutional stem: mmpretrain's DeiT-S config with the backbone
# type changed. No published result (README.md).
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'
custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
# mmelsa's Runner: refuses checkpoints that do not fit and work dirs it would overwrite.
runner_type = 'SafeRunner'

model = dict(backbone=dict(type='ConvStemVisionTransformer', conv_stem=dict()))
