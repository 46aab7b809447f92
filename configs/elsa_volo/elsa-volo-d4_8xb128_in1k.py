# ELSA-VOLO-D4 on ImageNet-1K at 224 px: the ELSA-VOLO-D2 recipe (lr 1e-3) with drop path 0.5,
# assumed: VOLO's release gives no D4 training command, so D3's values (README.md).
_base_ = './elsa-volo-d2_8xb128_in1k.py'

model = dict(backbone=dict(arch='d4', drop_path_rate=0.5), head=dict(in_channels=768))
