# A user's segmenter: MMSegmentation's FCN with the backbone replaced by a timm_ext export, given the mmseg way
# as model.pretrained (which EncoderDecoder passes to the backbone).
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'

custom_imports = dict(imports=['mm_ext'], allow_failed_imports=False)
custom_hooks = [dict(type='LrRecorderHook'), dict(type='RandomStateHook'), dict(type='NonFiniteLossHook')]

model = dict(
    pretrained='work_dirs/fashion_cls/backbone.pth',
    backbone=dict(
        _delete_=True,
        type='TimmTransferBackbone',
        model_name='tricks_resnet26nd',
        output_stride=16),  # the narrow net has no stem max-pool: 16 gives the D8 strides 2, 4, 8, 8
    decode_head=dict(in_channels=512),
    auxiliary_head=dict(in_channels=256))
