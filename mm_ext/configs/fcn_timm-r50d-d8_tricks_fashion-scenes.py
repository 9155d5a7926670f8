# The fashion-scenes FCN with the training tricks (see fcn_timm-r26nd-d8_tricks_fashion-scenes.py) and the
# paper's backbone, the full-width timm ResNet-50-D exported by timm_ext.
_base_ = './fcn_timm-r26nd-d8_tricks_fashion-scenes.py'

model = dict(
    backbone=dict(model_name='tricks_resnet50d', output_stride=8),
    decode_head=dict(in_channels=2048, channels=512),
    auxiliary_head=dict(in_channels=1024, channels=256))
