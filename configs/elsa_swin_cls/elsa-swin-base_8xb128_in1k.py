# ELSA-Swin-B on ImageNet-1K, 300 epochs: the ELSA-Swin-T recipe with Swin-B's stochastic depth
# (0.5), evaluated with EMA weights as the release reports it. Published: 84.0 top-1 (README.md).
_base_ = './elsa-swin-tiny_8xb128_in1k.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=1024))
# Weights averaged after every iteration (momentum 1e-4, timm's model EMA decay 0.9999); the
# validation and the saved checkpoint's 'ema_state_dict' use them.
custom_hooks = [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]
