# The toy classifier with a DDF-ResNet: the ELSA-Swin toy classifier's data, schedule and tools
# (TASKS=ddf bash tools/run_toy.sh) with a narrow DDF-mul-ResNet-50 (stem and base width 16
# instead of 64: 0.95M parameters) as the backbone; measurements in configs/toy/README.md.
_base_ = './elsa-swin-toy_1xb32-8e_toy-cls-64px.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='DDFResNet',
        depth=50,
        kernel_combine='mul',
        stem_channels=16,
        base_channels=16,
        out_indices=(3, )),
    head=dict(in_channels=512))

optim_wrapper = dict(
    optimizer=dict(lr=1e-3),
    paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'channel_branch.4.std': dict(decay_mult=0.)}))
