# A user's segmenter with label smoothing in both heads: only the loss types change (the stock use_sigmoid=False,
# loss_weight=1.0 / 0.4 stay); the export is given as model.backbone.checkpoint, so model.pretrained is cleared.
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'

custom_imports = dict(imports=['mm_ext'], allow_failed_imports=False)
custom_hooks = [dict(type='LrRecorderHook'), dict(type='RandomStateHook'), dict(type='NonFiniteLossHook')]

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='TimmTransferBackbone',
        model_name='tricks_resnet26nd',
        checkpoint='work_dirs/fashion_cls/backbone.pth',
        output_stride=16),
    decode_head=dict(in_channels=512, loss_decode=dict(type='LabelSmoothingCrossEntropyLoss', epsilon=0.1)),
    auxiliary_head=dict(in_channels=256, loss_decode=dict(type='LabelSmoothingCrossEntropyLoss', epsilon=0.1)))
