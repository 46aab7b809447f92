# DDF-add-ResNet-50 on ImageNet-1K, 120 epochs: the DDF-mul-ResNet-50 recipe.
# Published: 78.8 top-1, 16.8M parameters.
_base_ = './ddf-mul-resnet50_8xb128-120e_in1k.py'

model = dict(backbone=dict(depth=50, kernel_combine='add'))
