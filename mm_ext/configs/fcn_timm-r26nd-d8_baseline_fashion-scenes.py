# FCN D8 on the fashion scenes (128 px; 11 classes: 0 background, 1..10 items; 255 ignored) with the narrow
# small-input timm ResNet-26-D exported by timm_ext. Small enough for the CPU. Baseline: MMSegmentation's
# usual training (SGD, poly decay, softmax cross entropy). Set the export with
#   --cfg-options model.backbone.checkpoint=PATH/backbone.pth
_base_ = [
    'mmseg::_base_/models/fcn_r50-d8.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
    './_base_/tricks_runtime.py',  # custom_imports of mm_ext and the lr-record / exact-resume / NaN-stop hooks
]

# Fashion scenes (python -m plugins.data.scenes --out DIR) as a semantic segmentation set, 128 px images:
# label PNGs with 0 background, 1..10 the Fashion-MNIST classes, 255 ignore (uncertain item borders).
# DIR comes from the FASHION_SCENES_ROOT environment variable, else data/fashion_scenes/.
dataset_type = 'BaseSegDataset'
data_root = '{{$FASHION_SCENES_ROOT:data/fashion_scenes/}}'
metainfo = dict(
    classes=('background', 'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
             'Sneaker', 'Bag', 'Ankle boot'))
crop_size = (128, 128)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix='.png',
        seg_map_suffix='.png',
        reduce_zero_label=False,
        data_prefix=dict(img_path='train/images', seg_map_path='train/labels'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix='.png',
        seg_map_suffix='.png',
        reduce_zero_label=False,
        data_prefix=dict(img_path='val/images', seg_map_path='val/labels'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

norm_cfg = dict(type='BN', requires_grad=True)  # the base config's SyncBN needs several GPUs
model = dict(
    # Fashion-MNIST's pixel mean and std (plugins.data.fashion_mnist), the backbone's training statistics.
    data_preprocessor=dict(mean=[72.94] * 3, std=[90.02] * 3, size=(128, 128)),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='TimmTransferBackbone',
        model_name='tricks_resnet26nd',
        checkpoint=None,  # no transfer until set to a timm_ext backbone.pth (see above)
        out_indices=(1, 2, 3, 4),
        # The narrow net has no stem max-pool, so timm's output_stride=16 gives strides 2, 4, 8, 8: the
        # last two stages dilated at stride 8, as D8 means (output_stride=8 would give stride 4).
        output_stride=16,
        norm_eval=False),
    decode_head=dict(in_channels=512, channels=128, num_classes=11, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=64, num_classes=11, norm_cfg=norm_cfg))

train_cfg = dict(type='IterBasedTrainLoop', max_iters=1000, val_interval=1000)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005),
    clip_grad=None)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=1000, by_epoch=False)]
auto_scale_lr = dict(enable=False, base_batch_size=8)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000))
