# A user's first try: the backbone swapped, model.pretrained left as the stock config has it
# ('open-mmlab://resnet50_v1c', weights of another network). Building it stops with one message saying what to set.
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'

custom_imports = dict(imports=['mm_ext'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmTransferBackbone',
        model_name='tricks_resnet26nd',
        checkpoint='work_dirs/fashion_cls/backbone.pth',
        output_stride=16),
    decode_head=dict(in_channels=512),
    auxiliary_head=dict(in_channels=256))
