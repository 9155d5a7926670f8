# A user's detector with label smoothing in the box classifier: only the loss type changes, the stock
# config's use_sigmoid=False and loss_weight=1.0 stay in the merged dict.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mm_ext'], allow_failed_imports=False)
custom_hooks = [dict(type='LrRecorderHook'), dict(type='RandomStateHook'), dict(type='NonFiniteLossHook')]

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmTransferBackbone',
        model_name='tricks_resnet26nd',
        checkpoint='work_dirs/fashion_cls/backbone.pth',
        small_input=False,
        frozen_stages=1,
        norm_eval=True),
    neck=dict(in_channels=[64, 128, 256, 512]),
    roi_head=dict(bbox_head=dict(loss_cls=dict(type='LabelSmoothingCrossEntropyLoss', epsilon=0.1))))
