# Faster R-CNN FPN on Pascal VOC 07+12 (the paper's detection transfer setting) with a timm ResNet-50-D
# backbone exported by timm_ext. Baseline: MMDetection's own VOC training (SGD, step decay, softmax cross
# entropy); only the backbone is ours. Point it at an export with
#   --cfg-options model.backbone.checkpoint=PATH/backbone.pth
_base_ = [
    'mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py',
    './_base_/tricks_runtime.py',  # custom_imports of mm_ext and the lr-record / exact-resume / NaN-stop hooks
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmTransferBackbone',
        model_name='tricks_resnet50d',
        checkpoint=None,  # no transfer until set to a timm_ext backbone.pth (see above)
        out_indices=(1, 2, 3, 4),
        frozen_stages=1,
        norm_eval=True),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
