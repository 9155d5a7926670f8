# A user's PSPNet with the optimizer tricks (no bias decay, warmup + cosine per iteration), inheriting the
# plugin's runtime base for custom_imports and the hooks.
_base_ = [
    'mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py',
    '../../../mm_ext/configs/_base_/tricks_runtime.py',
]

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='TimmTransferBackbone',
        model_name='tricks_resnet26nd',
        checkpoint='work_dirs/fashion_cls/backbone.pth',
        output_stride=16),
    decode_head=dict(in_channels=512),
    auxiliary_head=dict(in_channels=256))

optim_wrapper = dict(constructor='NoBiasDecayOptimWrapperConstructor')
param_scheduler = [dict(type='WarmupCosineLR', by_epoch=False, warmup_steps=1000)]
