# ELSA-Swin-S on ImageNet-1K, 300 epochs: the ELSA-Swin-T recipe with Swin-S's stochastic depth
# (0.3). Published: 83.5 top-1 (README.md).
_base_ = './elsa-swin-tiny_8xb128_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.3), head=dict(in_channels=768))
