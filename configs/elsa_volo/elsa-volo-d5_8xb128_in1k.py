# ELSA-VOLO-D5 on ImageNet-1K at 224 px: the ELSA-VOLO-D2 recipe (lr 1e-3) with drop path 0.75,
# assumed: VOLO's release gives no D5 training command (README.md).
_base_ = './elsa-volo-d2_8xb128_in1k.py'

model = dict(backbone=dict(arch='d5', drop_path_rate=0.75), head=dict(in_channels=768))
