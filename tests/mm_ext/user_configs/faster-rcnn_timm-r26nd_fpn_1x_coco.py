# A user's detector: MMDetection's Faster R-CNN with the backbone replaced by a timm_ext export; everything else
# (data, schedule, heads, losses) stays the stock config's.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mm_ext'], allow_failed_imports=False)
custom_hooks = [dict(type='LrRecorderHook'), dict(type='RandomStateHook'), dict(type='NonFiniteLossHook')]

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmTransferBackbone',
        model_name='tricks_resnet26nd',
        checkpoint='work_dirs/fashion_cls/backbone.pth',
        small_input=False,  # keep the stem max-pool: strides 4..32 as the FPN expects
        frozen_stages=1,
        norm_eval=True),
    neck=dict(in_channels=[64, 128, 256, 512]))
