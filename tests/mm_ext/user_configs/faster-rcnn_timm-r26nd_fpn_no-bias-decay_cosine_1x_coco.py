# A user's detector with the optimizer tricks: no weight decay on biases and norms, and one epoch of linear
# warmup then cosine over the stock 12 epochs, stepped every iteration.
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
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(constructor='NoBiasDecayOptimWrapperConstructor')
param_scheduler = [
    dict(type='WarmupCosineLR', by_epoch=True, warmup_steps=1, convert_to_iter_based=True)
]
