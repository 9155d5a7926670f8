# The baseline config with the training tricks on: per-iteration linear warmup + closed-form cosine
# (WarmupCosineLR), no weight decay on biases and norms, and label smoothing in the decode head
# (pixels labelled 255 are ignored).
_base_ = './fcn_timm-r50d-d8_baseline_ade20k-512x512.py'

model = dict(
    decode_head=dict(
        loss_decode=dict(
            _delete_=True,
            type='LabelSmoothingCrossEntropyLoss',
            epsilon=0.1,
            form='paper',
            loss_weight=1.0)))

optim_wrapper = dict(constructor='NoBiasDecayOptimWrapperConstructor')

# In iterations; `end` defaults to max_iters (80k).
param_scheduler = [dict(type='WarmupCosineLR', by_epoch=False, warmup_steps=1000, min_lr_ratio=0.0)]
