# ELSA-Swin-T with the scaled-ReLU convolutional stem reaching stride 4 (7x7 stride 2 -> 3x3 ->
# 3x3, then a 2x2 projection) in place of its 4x4 patchify convolution: the ELSA-Swin-T recipe
# otherwise. No published result (README.md).
_base_ = '../elsa_swin_cls/elsa-swin-tiny_8xb128_in1k.py'

model = dict(backbone=dict(conv_stem=dict()))
