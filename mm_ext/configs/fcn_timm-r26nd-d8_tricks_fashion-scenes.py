# The fashion-scenes baseline with the training tricks on: per-iteration linear warmup + closed-form cosine
# (WarmupCosineLR), no weight decay on biases and norms, and label smoothing in the decode head.
_base_ = './fcn_timm-r26nd-d8_baseline_fashion-scenes.py'

model = dict(
    decode_head=dict(
        loss_decode=dict(
            _delete_=True,
            type='LabelSmoothingCrossEntropyLoss',
            epsilon=0.1,
            form='paper',
            loss_weight=1.0)))

optim_wrapper = dict(constructor='NoBiasDecayOptimWrapperConstructor')

# In iterations; `end` defaults to max_iters.
param_scheduler = [dict(type='WarmupCosineLR', by_epoch=False, warmup_steps=50, min_lr_ratio=0.0)]
