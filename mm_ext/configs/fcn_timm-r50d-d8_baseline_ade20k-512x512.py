# FCN D8 on ADE20K (the paper's segmentation transfer setting) with a timm ResNet-50-D backbone exported by
# timm_ext, dilated to output stride 8. Baseline: MMSegmentation's own 80k-iteration training (SGD, poly
# decay, softmax cross entropy); only the backbone is ours. Point it at an export with
#   --cfg-options model.backbone.checkpoint=PATH/backbone.pth
_base_ = [
    'mmseg::fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py',
    './_base_/tricks_runtime.py',  # custom_imports of mm_ext and the lr-record / exact-resume / NaN-stop hooks
]

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='TimmTransferBackbone',
        model_name='tricks_resnet50d',
        checkpoint=None,  # no transfer until set to a timm_ext backbone.pth (see above)
        out_indices=(1, 2, 3, 4),
        output_stride=8,
        norm_eval=False))

# The heads use SyncBN from the base config; the timm backbone's BatchNorm layers are converted too when
# training is distributed (MMEngine reverts both to BatchNorm in a single process).
sync_bn = 'torch'
