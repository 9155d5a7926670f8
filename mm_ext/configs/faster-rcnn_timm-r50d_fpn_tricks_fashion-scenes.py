# The fashion-scenes detector with the training tricks (see faster-rcnn_timm-r26nd_fpn_tricks_fashion-scenes.py)
# and the paper's backbone, the full-width timm ResNet-50-D exported by timm_ext.
_base_ = './faster-rcnn_timm-r26nd_fpn_tricks_fashion-scenes.py'

model = dict(
    backbone=dict(model_name='tricks_resnet50d'),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
