# Faster R-CNN R-50, 12 epochs on COCO: mmdet's config with the FPN's top-down upsampling done by
# DDF-Up (x2, one DDFUpPack per level), as mmdet's FPN_CARAFE does with CARAFE. No published
# result (README.md).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmelsa'], allow_failed_imports=False)
# mmelsa's Runner: refuses checkpoints that do not fit and work dirs it would overwrite.
runner_type = 'SafeRunner'

# The release's DDF-Up defaults: K = 3, one head, se_ratio 0.2, 'linear' gain, 'mul'.
model = dict(
    neck=dict(type='DDFUpFPN', ddf_up_cfg=dict(kernel_size=3, head=1, kernel_combine='mul')))
