# A user's Pascal VOC detector with every trick, inheriting the plugin's runtime base for custom_imports and
# the hooks instead of writing them out.
_base_ = [
    'mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py',
    '../../../mm_ext/configs/_base_/tricks_runtime.py',
]

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

optim_wrapper = dict(constructor='NoBiasDecayOptimWrapperConstructor')
param_scheduler = [dict(type='WarmupCosineLR', by_epoch=False, warmup_steps=500)]
