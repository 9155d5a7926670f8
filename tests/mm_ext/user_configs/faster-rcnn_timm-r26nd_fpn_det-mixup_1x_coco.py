# A user's detector with the Bag of Freebies' detection mixup: the batch is mixed in pairs by a hook, the RPN and
# the RoI head take each box's weight by their type alone (every inherited key stays), and the box classifier is
# label-smoothed; mixup stops for the last 10 % of the iterations.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mm_ext'], allow_failed_imports=False)
custom_hooks = [dict(type='LrRecorderHook'), dict(type='RandomStateHook'), dict(type='NonFiniteLossHook'),
                dict(type='DetectionMixupHook', alpha=1.5, stop_fraction=0.9)]

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
    rpn_head=dict(type='MixWeightRPNHead'),
    roi_head=dict(
        type='MixWeightStandardRoIHead',
        bbox_head=dict(loss_cls=dict(type='LabelSmoothingCrossEntropyLoss', epsilon=0.1))))
