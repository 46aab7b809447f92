# DDF-add-ResNet-101 on ImageNet-1K, 120 epochs: the DDF-mul-ResNet-50 recipe.
# Published: 79.9 top-1, 28.1M parameters.
_base_ = './ddf-mul-resnet50_8xb128-120e_in1k.py'

model = dict(backbone=dict(depth=101, kernel_combine='add'))
