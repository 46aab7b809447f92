# DeiT-Ti with the scaled-ReLU convolutional stem in place of its patchify convolution:
# mmpretrain's DeiT-Ti config (DeiT's recipe) with the backbone type changed. No published
# result (README.md).
_base_ = 'mmpretrain::deit/deit-tiny_4xb256_in1k.py'
custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
# mmelsa's Runner: refuses checkpoints that do not fit and work dirs it would overwrite.
runner_type = 'SafeRunner'

model = dict(backbone=dict(type='ConvStemVisionTransformer', conv_stem=dict()))
