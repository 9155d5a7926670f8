# FCN D8 on the fashion scenes with the paper's backbone, the full-width timm ResNet-50-D exported by timm_ext
# (python -m timm_ext.train --model tricks_resnet50d --dataset fashion_mnist --in-chans 3 --export-backbone ...).
# Data and schedule are the ResNet-26-D version's; heads as MMSegmentation's fcn_r50-d8. Meant for a GPU.
_base_ = './fcn_timm-r26nd-d8_baseline_fashion-scenes.py'

model = dict(
    backbone=dict(
        model_name='tricks_resnet50d',
        # ResNet-50-D keeps its stem max-pool: output_stride=8 gives strides 4, 8, 8, 8 (D8)
        output_stride=8),
    decode_head=dict(in_channels=2048, channels=512),
    auxiliary_head=dict(in_channels=1024, channels=256))
