# ELSA-VOLO-D3 on ImageNet-1K at 224 px: the ELSA-VOLO-D1 recipe with VOLO-D3's lr 1e-3 and
# drop path 0.5.
_base_ = './elsa-volo-d1_8xb128_in1k.py'

model = dict(backbone=dict(arch='d3', drop_path_rate=0.5), head=dict(in_channels=512))
lr = 1.0e-3
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / lr, by_epoch=True, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20, end=300)
]
