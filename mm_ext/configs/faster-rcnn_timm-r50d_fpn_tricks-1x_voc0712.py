# The baseline config with the training tricks on: per-iteration linear warmup + closed-form cosine
# (WarmupCosineLR), no weight decay on biases and norms (NoBiasDecayOptimWrapperConstructor), and the paper's
# label smoothing in the box classifier (K + 1 classes, background included).
_base_ = './faster-rcnn_timm-r50d_fpn_baseline-1x_voc0712.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='LabelSmoothingCrossEntropyLoss',
                epsilon=0.1,
                form='paper',
                loss_weight=1.0))))

optim_wrapper = dict(constructor='NoBiasDecayOptimWrapperConstructor')

# In iterations; `end` defaults to the training length (max_epochs x iterations per epoch).
param_scheduler = [dict(type='WarmupCosineLR', by_epoch=False, warmup_steps=500, min_lr_ratio=0.0)]
