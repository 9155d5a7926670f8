# What a config needs so that any entry point gives the run of `python -m mm_ext.train`: MMDetection's and
# MMSegmentation's own tools/train.py and tools/dist_train.sh, or Runner.from_cfg(Config.fromfile(...)).
# Inherit it next to a stock config:
#   _base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', '<this repository>/mm_ext/configs/_base_/tricks_runtime.py']
# or copy its two settings into the config. A config that sets its own custom_hooks replaces this list (MMEngine
# merges dicts, not lists): keep these three entries in it.

# Registers the tricks (schedulers, optimizer constructor, losses, backbone, hooks) in MMEngine's registries.
custom_imports = dict(imports=['mm_ext'], allow_failed_imports=False)

# The hooks python -m mm_ext.train adds to every run (it adds none that a config lists already):
# - LrRecorderHook: the lr of every iteration to work_dir/lr_per_step.csv (the format of timm_ext and d2_ext)
# - RandomStateHook: checkpoints carry the torch random state, so a resumed run continues exactly
# - NonFiniteLossHook: a NaN / infinite loss stops training before that iteration's checkpoint
custom_hooks = [
    dict(type='LrRecorderHook'),
    dict(type='RandomStateHook'),
    dict(type='NonFiniteLossHook'),
]
