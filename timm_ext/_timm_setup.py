"""Set-up pieces of timm's run (``timm_ext._timm_run``): checks that name the flag, logging, device, model,
losses, task, datasets and optimizer, each as timm's train.py builds it, with the extension's switches."""

from __future__ import annotations

import logging
import os
import sys
from functools import partial

import timm
import torch
import torch.nn as nn
from timm import utils
from timm.data import create_dataset
from timm.loss import BinaryCrossEntropy, JsdCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models import create_model
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.task import (
    ClassificationTask,
    FeatureDistillationTask,
    LogitDistillationTask,
    TokenDistillationTask,
)
from timm.utils.log import FormatterNoInfo

from plugins.tricks.label_smoothing import LabelSmoothingCrossEntropy as PaperSmoothingCrossEntropy

from ._timm_data import BUILT_IN, built_in_dataset
from ._timm_flags import NOT_RUN, option_strings
from .cli import UsageError

_logger = logging.getLogger("train")

# Extension flags that only the recipe engine applies (dest -> what to use in timm's run instead).
_RECIPE_ONLY = {"kd_teacher": "timm's --kd-model-name, or add --recipe for the paper's distillation",
                "checkpoint_interval": "timm's --recovery-interval"}


# Value ranges timm's train.py leaves to a later crash: (dest, low, high, low open, high open); None = unbounded.
_RANGES = [("batch_size", 1, None, False, False), ("validation_batch_size", 1, None, False, False),
           ("epochs", 1, None, False, False), ("workers", 0, None, False, False),
           ("smoothing", 0, 1, False, True), ("reprob", 0, 1, False, False), ("hflip", 0, 1, False, False),
           ("vflip", 0, 1, False, False), ("mixup", 0, None, False, False), ("cutmix", 0, None, False, False),
           ("mixup_prob", 0, 1, False, False), ("drop", 0, 1, False, True), ("drop_path", 0, 1, False, True),
           ("lr", 0, None, True, False), ("lr_base", 0, None, True, False), ("lr_base_size", 1, None, False, False),
           ("weight_decay", 0, None, False, False), ("model_ema_decay", 0, 1, False, False),
           ("log_interval", 1, None, False, False), ("val_interval", 1, None, False, False),
           ("checkpoint_hist", 1, None, False, False), ("train_subset", 0, None, False, False),
           ("val_subset", 0, None, False, False)]


def _check_ranges(args) -> None:
    for dest, low, high, low_open, high_open in _RANGES:
        value = getattr(args, dest)
        if value is None:
            continue
        bad = (low is not None and (value <= low if low_open else value < low)) or (
            high is not None and (value >= high if high_open else value > high))
        if bad:
            lo = "(" if low_open else "["
            hi = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
            raise UsageError(f"argument {option_strings(dest)}: must be in {lo}{low}, {hi}, got {value}")
    if args.warmup_epochs != int(args.warmup_epochs):
        raise UsageError(f"argument --warmup-epochs: timm's run takes whole epochs, got {args.warmup_epochs} "
                         "(a fractional warmup is a --recipe feature)")
    args.warmup_epochs = int(args.warmup_epochs)


def check_args(args, given: set[str]) -> None:
    _check_ranges(args)
    if not timm.is_model(args.model):
        raise UsageError(f"--model {args.model}: not a timm model; e.g. resnet50d or tricks_resnet26nd "
                         "(timm.list_models('*resnet*'))")
    data_dir = args.data_dir or args.data
    if not args.dataset and not data_dir:
        raise UsageError("no data: give timm's positional data dir (or --data-dir) for an ImageFolder or tar, "
                         f"--dataset torch/<name> or hfds/<name> with timm's options, or a built-in set "
                         f"(--dataset {' or '.join(BUILT_IN)}, offline)")
    if data_dir and not args.dataset and not os.path.exists(data_dir):
        raise UsageError(f"data dir {data_dir}: no such folder or file")
    for dest, why in NOT_RUN.items():
        if dest in given and getattr(args, dest):
            raise UsageError(f"--{dest.replace('_', '-')}: {why}")
    for dest, instead in _RECIPE_ONLY.items():
        if dest in given and getattr(args, dest):
            raise UsageError(f"--{dest.replace('_', '-')}: applies to --recipe runs only; in timm's run use {instead}")
    if (args.train_subset or args.val_subset) and args.dataset not in BUILT_IN:
        raise UsageError(f"--train-subset/--val-subset: only for the built-in datasets {list(BUILT_IN)}; timm's "
                         "--train-num-samples/--val-num-samples size iterable datasets")
    if args.smoothing_form == "paper" and (args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None):
        raise UsageError("--smoothing-form paper with --mixup/--cutmix: timm's mixup smooths its targets uniformly; "
                         "use --recipe for the paper's smoothing under mixup")
    if args.naflex_loader and args.train_img_sizes is not None:
        raise UsageError("--naflex-loader and --train-img-sizes are alternative loader modes")


class _StderrHandler(logging.Handler):
    """Log lines to the current ``sys.stderr`` (timm's format), installed once per process."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 (logging must not end a run)
            self.handleError(record)


def setup_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(FormatterNoInfo())
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def select_device(args, given: set[str]) -> torch.device:
    if "device" not in given and not torch.cuda.is_available():
        args.device = "cpu"  # timm's default is cuda; without one, the CPU (said in the log)
        _logger.info("No CUDA device: training on the CPU (--device cpu).")
    elif args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available here; accepted: cpu")
    return utils.init_distributed_device(args)


def loss_fns(args, mixup_active: bool, num_aug_splits: int, device):
    bce = dict(target_threshold=args.bce_target_thresh, sum_classes=args.bce_sum, pos_weight=args.bce_pos_weight)
    if args.jsd_loss:
        if num_aug_splits < 2:
            raise UsageError("--jsd-loss: needs --aug-splits 2 or more")
        train = JsdCrossEntropy(num_splits=num_aug_splits, smoothing=args.smoothing)
    elif mixup_active:  # mixup makes soft targets (smoothing included)
        train = BinaryCrossEntropy(**bce) if args.bce_loss else SoftTargetCrossEntropy()
    elif args.smoothing:
        if args.bce_loss:
            train = BinaryCrossEntropy(smoothing=args.smoothing, **bce)
        elif args.smoothing_form == "paper":
            train = PaperSmoothingCrossEntropy(epsilon=args.smoothing, form="paper")
        else:
            train = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        train = nn.CrossEntropyLoss()
    return train.to(device=device), nn.CrossEntropyLoss().to(device=device)


def build_task(args, model, criterion, device, model_dtype):
    common = dict(criterion=criterion, distill_loss_weight=args.distill_loss_weight,
                  task_loss_weight=args.task_loss_weight, device=device, dtype=model_dtype,
                  verbose=utils.is_primary(args))
    if args.kd_model_name is None:
        return ClassificationTask(model=model, criterion=criterion, device=device, dtype=model_dtype,
                                  verbose=utils.is_primary(args))
    if args.kd_distill_type == "logit":
        return LogitDistillationTask(student_model=model, teacher_model=args.kd_model_name,
                                     loss_type=args.kd_loss_type, temperature=args.kd_temperature, **common)
    if args.kd_distill_type == "feature":
        return FeatureDistillationTask(student_model=model, teacher_model=args.kd_model_name,
                                       student_feature_dim=args.kd_student_feature_dim,
                                       teacher_feature_dim=args.kd_teacher_feature_dim, **common)
    return TokenDistillationTask(student_model=model, teacher_model=args.kd_model_name,
                                 distill_type=args.kd_token_distill_type, temperature=args.kd_temperature, **common)


def build_datasets(args, input_img_mode: str):
    if args.dataset in BUILT_IN:
        img_size = args.input_size[-1] if args.input_size else args.img_size
        make = partial(built_in_dataset, args.dataset, root=args.data_dir, img_size=img_size)
        return make("train", limit=args.train_subset), (make("test", limit=args.val_subset) if args.val_split
                                                        else None)
    common = dict(root=args.data_dir, class_map=args.class_map, download=args.dataset_download,
                  batch_size=args.batch_size, input_img_mode=input_img_mode, input_key=args.input_key,
                  target_key=args.target_key, trust_remote_code=args.dataset_trust_remote_code)
    where = f"--dataset {args.dataset!r}" if args.dataset else f"data dir {args.data_dir}"
    try:
        train = create_dataset(args.dataset, split=args.train_split, is_training=True, seed=args.seed,
                               repeats=args.epoch_repeats, num_samples=args.train_num_samples, **common)
        evaluation = None
        if args.val_split:
            evaluation = create_dataset(args.dataset, split=args.val_split, is_training=False,
                                        num_samples=args.val_num_samples, **common)
    except (AssertionError, FileNotFoundError, RuntimeError, ValueError, ImportError) as err:
        raise UsageError(f"{where} (--train-split {args.train_split!r}, --val-split {args.val_split!r}): "
                         f"{err or type(err).__name__}") from None
    if len(train) == 0:
        raise UsageError(f"{where} --train-split {args.train_split!r}: holds no images")
    return train, evaluation


def build_model(args):
    """timm's ``create_model`` call of train.py, with ``--zero-gamma``/``--no-zero-gamma`` as ``zero_init_last``."""
    in_chans = args.in_chans if args.in_chans is not None else (args.input_size[0] if args.input_size else 3)
    factory = dict(args.model_kwargs)
    if args.pretrained_path:
        factory["pretrained_cfg_overlay"] = dict(file=args.pretrained_path, num_classes=-1)
    if args.zero_gamma is not None:
        factory["zero_init_last"] = args.zero_gamma
    model = create_model(args.model, pretrained=args.pretrained, in_chans=in_chans, num_classes=args.num_classes,
                         drop_rate=args.drop, drop_path_rate=args.drop_path, drop_block_rate=args.drop_block,
                         global_pool=args.gp, bn_momentum=args.bn_momentum, bn_eps=args.bn_eps,
                         scriptable=args.torchscript, checkpoint_path=args.initial_checkpoint, **factory)
    if args.head_init_scale is not None:
        with torch.no_grad():
            model.get_classifier().weight.mul_(args.head_init_scale)
            model.get_classifier().bias.mul_(args.head_init_scale)
    if args.head_init_bias is not None:
        nn.init.constant_(model.get_classifier().bias, args.head_init_bias)
    if args.num_classes is None:
        args.num_classes = model.num_classes
    if args.grad_checkpointing:
        model.set_grad_checkpointing(enable=True)
    return model, in_chans


def build_optimizer(args, model):
    """timm's optimizer factory; ``--bias-decay`` decays biases and norms too (timm filters them out)."""
    kwargs = optimizer_kwargs(cfg=args)
    if args.no_bias_decay is False:
        kwargs["filter_bias_and_bn"] = False
    return create_optimizer_v2(model, **kwargs, **args.opt_kwargs)
