# Faster R-CNN FPN on the fashion scenes with the paper's backbone, the full-width timm ResNet-50-D, exported by
# timm_ext (python -m timm_ext.train --model tricks_resnet50d --dataset fashion_mnist --in-chans 3 --export-backbone
# ...). Data, heads and schedule are the ResNet-26-D version's; about 8x its backbone compute, so meant for a GPU.
_base_ = './faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py'

model = dict(
    backbone=dict(model_name='tricks_resnet50d'),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
