# The fashion-scenes baseline with the training tricks on: per-iteration linear warmup + closed-form cosine
# (WarmupCosineLR), no weight decay on biases and norms, and the paper's label smoothing in the box
# classifier (K + 1 = 11 classes, background included).
_base_ = './faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py'

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

# In iterations; `end` defaults to max_iters.
param_scheduler = [dict(type='WarmupCosineLR', by_epoch=False, warmup_steps=50, min_lr_ratio=0.0)]
