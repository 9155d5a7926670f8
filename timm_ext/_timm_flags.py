"""timm train.py's command line as data: every flag with timm's names, aliases, types, choices and defaults.

The table follows timm's ``train.py`` (the version in ``tests/timm_ext/data/timm_train_flags.json``, which a test
compares with the parser built here). Help texts are short; timm's documentation gives each flag's full meaning.
Flags whose feature ``tricks-train`` does not run are listed in ``NOT_RUN``: setting one away from its default is
an error that names it, never a silent difference.
"""

from __future__ import annotations

import argparse

from timm.utils import ParseKwargs

__all__ = ["GROUPS", "NOT_RUN", "WIDENED", "add_timm_flags", "option_strings"]

# Flags whose type accepts more than timm's (every value timm accepts means the same). timm's run still takes
# timm's values only (``timm_ext._timm_run`` refuses the others); the recipe engine uses the wider range.
WIDENED = {"--warmup-epochs": "float (timm: int); fractional warmup is for --recipe runs"}

# (group title, [(option strings, argparse keywords[, in the torchscript/torchcompile exclusive group])]).
GROUPS = [
    ('Config', [
        (['-c', '--config'], dict(default='')),
    ]),
    ('Dataset parameters', [
        (['data'], dict(nargs='?', const=None)),
        (['--data-dir'], dict()),
        (['--dataset'], dict(default='')),
        (['--train-split'], dict(default='train')),
        (['--val-split'], dict(default='validation')),
        (['--train-num-samples'], dict(default=None, type=int)),
        (['--val-num-samples'], dict(default=None, type=int)),
        (['--dataset-download'], dict(action='store_true', default=False)),
        (['--class-map'], dict(default='')),
        (['--input-img-mode'], dict(default=None)),
        (['--input-key'], dict(default=None)),
        (['--target-key'], dict(default=None)),
        (['--dataset-trust-remote-code'], dict(action='store_true', default=False)),
    ]),
    ('Model parameters', [
        (['--model'], dict(default='resnet50')),
        (['--pretrained'], dict(action='store_true', default=False)),
        (['--pretrained-path'], dict(default=None)),
        (['--initial-checkpoint'], dict(default='')),
        (['--resume'], dict(default='')),
        (['--no-resume-opt'], dict(action='store_true', default=False)),
        (['--num-classes'], dict(type=int, default=None)),
        (['--gp'], dict(default=None)),
        (['--img-size'], dict(type=int, default=None)),
        (['--in-chans'], dict(type=int, default=None)),
        (['--input-size'], dict(default=None, nargs=3, type=int)),
        (['--crop-pct'], dict(default=None, type=float)),
        (['--mean'], dict(type=float, nargs='+', default=None)),
        (['--std'], dict(type=float, nargs='+', default=None)),
        (['--interpolation'], dict(default='')),
        (['-b', '--batch-size'], dict(type=int, default=128)),
        (['-vb', '--validation-batch-size'], dict(type=int, default=None)),
        (['--channels-last'], dict(action='store_true', default=False)),
        (['--fuser'], dict(default='')),
        (['--grad-accum-steps'], dict(type=int, default=1)),
        (['--grad-checkpointing'], dict(action='store_true', default=False)),
        (['--fast-norm'], dict(default=False, action='store_true')),
        (['--model-kwargs'], dict(nargs='*', default={}, action=ParseKwargs)),
        (['--head-init-scale'], dict(default=None, type=float)),
        (['--head-init-bias'], dict(default=None, type=float)),
        (['--torchcompile-mode'], dict(default=None)),
        (['--torchscript'], dict(dest='torchscript', action='store_true'), True),
        (['--torchcompile'], dict(nargs='?', default=None, const='inductor'), True),
    ]),
    ('Device parameters', [
        (['--device'], dict(default='cuda')),
        (['--amp'], dict(action='store_true', default=False)),
        (['--amp-dtype'], dict(default='float16')),
        (['--model-dtype'], dict(default=None)),
        (['--no-ddp-bb'], dict(action='store_true', default=False)),
        (['--synchronize-step'], dict(action='store_true', default=False)),
        (['--local_rank'], dict(default=0, type=int)),
        (['--device-modules'], dict(default=None, nargs='+')),
    ]),
    ('Optimizer parameters', [
        (['--opt'], dict(default='sgd')),
        (['--opt-eps'], dict(default=None, type=float)),
        (['--opt-betas'], dict(default=None, type=float, nargs='+')),
        (['--momentum'], dict(type=float, default=0.9)),
        (['--weight-decay'], dict(type=float, default=2e-05)),
        (['--clip-grad'], dict(type=float, default=None)),
        (['--clip-mode'], dict(default='norm')),
        (['--layer-decay'], dict(type=float, default=None)),
        (['--layer-decay-min-scale'], dict(type=float, default=0)),
        (['--layer-decay-no-opt-scale'], dict(type=float, default=None)),
        (['--opt-kwargs'], dict(nargs='*', default={}, action=ParseKwargs)),
    ]),
    ('Learning rate schedule parameters', [
        (['--sched'], dict(default='cosine')),
        (['--sched-on-updates'], dict(action='store_true', default=False)),
        (['--lr'], dict(type=float, default=None)),
        (['--lr-base'], dict(type=float, default=0.1)),
        (['--lr-base-size'], dict(type=int, default=256)),
        (['--lr-base-scale'], dict(default='')),
        (['--lr-noise'], dict(type=float, nargs='+', default=None)),
        (['--lr-noise-pct'], dict(type=float, default=0.67)),
        (['--lr-noise-std'], dict(type=float, default=1.0)),
        (['--lr-cycle-mul'], dict(type=float, default=1.0)),
        (['--lr-cycle-decay'], dict(type=float, default=0.5)),
        (['--lr-cycle-limit'], dict(type=int, default=1)),
        (['--lr-k-decay'], dict(type=float, default=1.0)),
        (['--warmup-lr'], dict(type=float, default=1e-05)),
        (['--min-lr'], dict(type=float, default=0)),
        (['--epochs'], dict(type=int, default=300)),
        (['--epoch-repeats'], dict(type=float, default=0.0)),
        (['--start-epoch'], dict(default=None, type=int)),
        (['--decay-milestones'], dict(default=[90, 180, 270], type=int, nargs='+')),
        (['--decay-epochs'], dict(type=float, default=90)),
        (['--warmup-epochs'], dict(type=float, default=5)),  # WIDENED: recipes warm up for part of an epoch
        (['--warmup-prefix'], dict(action='store_true', default=False)),
        (['--cooldown-epochs'], dict(type=int, default=0)),
        (['--patience-epochs'], dict(type=int, default=10)),
        (['--decay-rate', '--dr'], dict(type=float, default=0.1)),
    ]),
    ('Augmentation and regularization parameters', [
        (['--no-aug'], dict(action='store_true', default=False)),
        (['--train-crop-mode'], dict(default=None)),
        (['--scale'], dict(type=float, nargs='+', default=[0.08, 1.0])),
        (['--ratio'], dict(type=float, nargs='+', default=[3.0 / 4.0, 4.0 / 3.0])),
        (['--hflip'], dict(type=float, default=0.5)),
        (['--vflip'], dict(type=float, default=0.0)),
        (['--color-jitter'], dict(type=float, default=0.4)),
        (['--color-jitter-prob'], dict(type=float, default=None)),
        (['--grayscale-prob'], dict(type=float, default=None)),
        (['--gaussian-blur-prob'], dict(type=float, default=None)),
        (['--aa'], dict(default=None)),
        (['--aug-repeats'], dict(type=float, default=0)),
        (['--aug-splits'], dict(type=int, default=0)),
        (['--jsd-loss'], dict(action='store_true', default=False)),
        (['--bce-loss'], dict(action='store_true', default=False)),
        (['--bce-sum'], dict(action='store_true', default=False)),
        (['--bce-target-thresh'], dict(type=float, default=None)),
        (['--bce-pos-weight'], dict(type=float, default=None)),
        (['--reprob'], dict(type=float, default=0.0)),
        (['--remode'], dict(default='pixel')),
        (['--recount'], dict(type=int, default=1)),
        (['--resplit'], dict(action='store_true', default=False)),
        (['--mixup'], dict(type=float, default=0.0)),
        (['--cutmix'], dict(type=float, default=0.0)),
        (['--cutmix-minmax'], dict(type=float, nargs='+', default=None)),
        (['--mixup-prob'], dict(type=float, default=1.0)),
        (['--mixup-switch-prob'], dict(type=float, default=0.5)),
        (['--mixup-mode'], dict(default='batch')),
        (['--mixup-off-epoch'], dict(default=0, type=int)),
        (['--smoothing'], dict(type=float, default=0.1)),
        (['--train-interpolation'], dict(default='random')),
        (['--drop'], dict(type=float, default=0.0)),
        (['--drop-connect'], dict(type=float, default=None)),
        (['--drop-path'], dict(type=float, default=None)),
        (['--drop-block'], dict(type=float, default=None)),
    ]),
    ('Batch norm parameters', [
        (['--bn-momentum'], dict(type=float, default=None)),
        (['--bn-eps'], dict(type=float, default=None)),
        (['--sync-bn'], dict(action='store_true')),
        (['--dist-bn'], dict(default='reduce')),
        (['--split-bn'], dict(action='store_true')),
    ]),
    ('Model exponential moving average parameters', [
        (['--model-ema'], dict(action='store_true', default=False)),
        (['--model-ema-force-cpu'], dict(action='store_true', default=False)),
        (['--model-ema-decay'], dict(type=float, default=0.9998)),
        (['--model-ema-warmup'], dict(action='store_true')),
    ]),
    ('Miscellaneous parameters', [
        (['--seed'], dict(type=int, default=42)),
        (['--worker-seeding'], dict(default='all')),
        (['--log-interval'], dict(type=int, default=50)),
        (['--val-interval'], dict(type=int, default=1)),
        (['--recovery-interval'], dict(type=int, default=0)),
        (['--checkpoint-hist'], dict(type=int, default=10)),
        (['-j', '--workers'], dict(type=int, default=4)),
        (['--save-images'], dict(action='store_true', default=False)),
        (['--pin-mem'], dict(action='store_true', default=False)),
        (['--no-prefetcher'], dict(action='store_true', default=False)),
        (['--output'], dict(default='')),
        (['--experiment'], dict(default='')),
        (['--eval-metric'], dict(default='top1')),
        (['--tta'], dict(type=int, default=0)),
        (['--use-multi-epochs-loader'], dict(action='store_true', default=False)),
        (['--log-wandb'], dict(action='store_true', default=False)),
        (['--wandb-project'], dict(default=None)),
        (['--wandb-tags'], dict(default=[], nargs='+')),
        (['--wandb-resume-id'], dict(default='')),
        (['--train-img-sizes'], dict(type=int, nargs='+', default=None)),
        (['--train-batch-sizes'], dict(type=int, nargs='+', default=None)),
        (['--train-size-probs'], dict(type=float, nargs='+', default=None)),
        (['--train-size-schedule'], dict(default='constant', choices=('constant', 'progressive'))),
        (['--train-size-schedule-spread'], dict(type=float, default=0.65)),
        (['--train-size-random-mix'], dict(type=float, default=0.1)),
        (['--train-batches-per-epoch', '--train-steps-per-epoch'], dict(type=int, default=None)),
        (['--variable-batch-loss-scale'], dict(default='none', choices=('none', 'sqrt', 'linear'))),
        (['--naflex-loader'], dict(action='store_true', default=False)),
        (['--naflex-train-seq-lens'], dict(type=int, nargs='+', default=[128, 256, 576, 784, 1024])),
        (['--naflex-max-seq-len'], dict(type=int, default=576)),
        (['--naflex-patch-sizes'], dict(type=int, nargs='+', default=None)),
        (['--naflex-patch-size-probs'], dict(type=float, nargs='+', default=None)),
        (['--naflex-loss-scale'], dict(default='linear', choices=('none', 'sqrt', 'linear'))),
        (['--naflex-patchify-channels-first'], dict(action='store_true', default=False)),
    ]),
    ('Knowledge distillation parameters', [
        (['--kd-model-name'], dict(default=None)),
        (['--kd-distill-type'], dict(default='logit', choices=['logit', 'feature', 'token'])),
        (['--kd-loss-type'], dict(default='kl')),
        (['--distill-loss-weight'], dict(default=None, type=float)),
        (['--task-loss-weight'], dict(default=None, type=float)),
        (['--kd-temperature'], dict(default=4.0, type=float)),
        (['--kd-student-feature-dim'], dict(default=None, type=int)),
        (['--kd-teacher-feature-dim'], dict(default=None, type=int)),
        (['--kd-token-distill-type'], dict(default='soft', choices=['soft', 'hard'])),
    ]),]

# Flags whose feature is not run by tricks-train (value -> why). Their defaults are accepted.
NOT_RUN = {
    "naflex_loader": "the NaFlex loader (variable-resolution ViTs) is not wired into tricks-train; use timm's "
                     "train.py for NaFlex models",
    "log_wandb": "wandb logging is not part of tricks-train; summary.csv and args.yaml hold every figure",
    "device_modules": "extra device backends are not loaded by tricks-train (cpu and cuda only)",
}


def option_strings(dest: str) -> str:
    """``-b/--batch-size`` for ``batch_size``: how argparse names a flag in its messages."""
    for _, flags in GROUPS:
        for names, kwargs, *_ in flags:
            if kwargs.get("dest", names[-1].lstrip("-").replace("-", "_")) == dest:
                return "/".join(names)
    return "--" + dest.replace("_", "-")


def add_timm_flags(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """Add every flag of timm's train.py to ``parser``, in timm's groups; returns the groups by title."""
    groups = {}
    for title, flags in GROUPS:
        group = groups[title] = parser.add_argument_group(title)
        exclusive = None
        for names, kwargs, *rest in flags:
            target = group
            if rest and rest[0]:
                exclusive = exclusive or group.add_mutually_exclusive_group()
                target = exclusive
            kwargs = dict(kwargs)
            if "help" not in kwargs:
                kwargs["help"] = "as timm's train.py"
            target.add_argument(*names, **kwargs)
    return groups
