# Faster R-CNN FPN on the fashion scenes (128 px, 10 classes) with the narrow small-input timm ResNet-26-D
# exported by timm_ext (python -m timm_ext.train --model tricks_resnet26nd --in-chans 3 --export-backbone ...).
# Small enough for the CPU. Baseline: MMDetection's usual training (SGD, linear warmup + step decay, softmax
# cross entropy). Set the export with --cfg-options model.backbone.checkpoint=PATH/backbone.pth
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    'mmdet::_base_/default_runtime.py',
    './_base_/tricks_runtime.py',  # custom_imports of mm_ext and the lr-record / exact-resume / NaN-stop hooks
]

# Fashion scenes (python -m plugins.data.scenes --out DIR) as a COCO detection set, 128 px images.
# DIR comes from the FASHION_SCENES_ROOT environment variable, else data/fashion_scenes/.
dataset_type = 'CocoDataset'
data_root = '{{$FASHION_SCENES_ROOT:data/fashion_scenes/}}'
# Category ids 1..10 of the COCO files, in Fashion-MNIST order (plugins.data.fashion_mnist.CLASSES).
classes = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
           'Ankle boot')
metainfo = dict(classes=classes)
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/images/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/images/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator

# The narrow net is built with its stem max-pool (small_input=False), so layer1..layer4 are at MMDetection's
# usual strides 4, 8, 16, 32 and the FPN adds one level at 64, as Detectron2's fashion config does. The
# classification export (trained without the max-pool on 28 px images) loads unchanged: pooling has no weights.
strides = [4, 8, 16, 32]
model = dict(
    # Fashion-MNIST's pixel mean and std (plugins.data.fashion_mnist), the backbone's training statistics.
    data_preprocessor=dict(mean=[72.94] * 3, std=[90.02] * 3, bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='TimmTransferBackbone',
        model_name='tricks_resnet26nd',
        checkpoint=None,  # no transfer until set to a timm_ext backbone.pth (see above)
        out_indices=(1, 2, 3, 4),
        frozen_stages=1,
        norm_eval=True,
        small_input=False),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64, num_outs=5),
    rpn_head=dict(in_channels=64, feat_channels=64, anchor_generator=dict(strides=strides + [64])),
    # torchvision's RoIAlign and NMS (mm_ext.ops.torchvision_nms): the same results as mmcv's, whose CPU kernels
    # took most of a training step here (benchmarks/bench_detector_cost.py); on a GPU both are fast.
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64, featmap_strides=strides,
                                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0,
                                               use_torchvision=True)),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=10)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300, nms=dict(type='torchvision_nms', iou_threshold=0.7)),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=300, nms=dict(type='torchvision_nms', iou_threshold=0.7)),
        rcnn=dict(nms=dict(type='torchvision_nms', iou_threshold=0.5))))

train_cfg = dict(type='IterBasedTrainLoop', max_iters=1000, val_interval=1000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=1000, milestones=[750, 900], gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=8)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000))
log_processor = dict(by_epoch=False)
