# DDF-add-ResNet-152 on ImageNet-1K, 120 epochs: the DDF-mul-ResNet-50 recipe.
# No published result.
_base_ = './ddf-mul-resnet50_8xb128-120e_in1k.py'

model = dict(backbone=dict(depth=152, kernel_combine='add'))
