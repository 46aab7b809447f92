# ELSA-VOLO-D3 on ImageNet-1K at 224 px: the ELSA-VOLO-D2 recipe (lr 1e-3, VOLO-D3's too) with
# VOLO-D3's drop path 0.5.
_base_ = './elsa-volo-d2_8xb128_in1k.py'

model = dict(backbone=dict(arch='d3', drop_path_rate=0.5), head=dict(in_channels=512))
