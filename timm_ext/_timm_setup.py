"""Set-up pieces of timm's run (``timm_ext._timm_run``): checks that name the flag, logging, device, model,
losses, task, datasets and optimizer, each as timm's train.py builds it, with the extension's switches."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import nullcontext
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

from plugins.runtime.checkpoint import BACKBONE_FORMAT, load_checkpoint
from plugins.tricks.distillation import distillation_loss
from plugins.tricks.label_smoothing import LabelSmoothingCrossEntropy as PaperSmoothingCrossEntropy
from plugins.tricks.label_smoothing import uniform_epsilon

from ._timm_data import BUILT_IN, built_in_dataset
from ._timm_flags import NOT_RUN, option_strings
from .cli import UsageError
from .scheduler import TIMM_SCHEDULES, TRICKS_SCHEDULES

_logger = logging.getLogger("train")

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
           ("val_subset", 0, None, False, False), ("train_clean_subset", 0, None, False, False),
           ("ece_bins", 0, None, False, False)]


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
    if args.sched not in TRICKS_SCHEDULES and args.sched not in TIMM_SCHEDULES:
        raise UsageError(f"argument --sched: unknown schedule {args.sched!r}; accepted: timm's "
                         f"{', '.join(TIMM_SCHEDULES)} or the paper's closed form per update {', '.join(TRICKS_SCHEDULES)}")
    if args.sched in TRICKS_SCHEDULES:
        if args.warmup_epochs < 0:
            raise UsageError(f"argument --warmup-epochs: must be >= 0, got {args.warmup_epochs}")
        if args.min_lr_ratio is not None and not 0 <= args.min_lr_ratio <= 1:
            raise UsageError(f"argument --min-lr-ratio: must be in [0, 1], got {args.min_lr_ratio}")
        return
    if args.warmup_epochs != int(args.warmup_epochs):
        raise UsageError(f"argument --warmup-epochs: timm's --sched {args.sched} takes whole epochs, got "
                         f"{args.warmup_epochs} (a fractional warmup runs with --sched tricks_cosine, tricks_step "
                         "or tricks_constant)")
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
    if args.opt.lower() in ("sgd", "nesterov") and args.momentum == 0:
        raise UsageError(f"--opt {args.opt} with --momentum 0: timm's {args.opt} is Nesterov SGD, which needs "
                         "momentum; accepted: --momentum > 0, or --opt momentum for plain SGD")
    if args.kd_teacher and args.kd_model_name:
        raise UsageError("--kd-teacher and --kd-model-name: one teacher; --kd-teacher is the paper's distillation "
                         "from a checkpoint, --kd-model-name timm's distillation tasks")
    if args.kd_teacher and (args.distill_loss_weight is not None or args.task_loss_weight is not None):
        raise UsageError("--kd-teacher with --distill-loss-weight/--task-loss-weight: the paper's distillation is "
                         "the plain sum CE + T^2 * soft CE; use --kd-model-name for timm's weighted form")
    if args.smoothing_form == "paper" and args.smoothing and (args.bce_loss or args.jsd_loss):
        raise UsageError("--smoothing-form paper with --bce-loss/--jsd-loss: timm's BCE and JSD losses smooth "
                         "uniformly; accepted with them: --smoothing-form uniform")
    if (args.train_subset or args.val_subset) and args.dataset not in BUILT_IN:
        raise UsageError(f"--train-subset/--val-subset: only for the built-in datasets {list(BUILT_IN)}; timm's "
                         "--train-num-samples/--val-num-samples size iterable datasets")
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


def mixup_smoothing(args) -> float:
    """The uniform epsilon timm's ``Mixup`` is given so that its targets carry ``--smoothing`` in
    ``--smoothing-form`` (the paper's form: 1 - eps on the true class, eps / (K - 1) on the others)."""
    if not args.smoothing or args.smoothing_form != "paper":
        return args.smoothing
    return uniform_epsilon(args.smoothing, args.num_classes, "paper")


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
    if args.kd_teacher:
        teacher = load_teacher(args.kd_teacher, args.kd_model, model, device)
        return PaperDistillationTask(student_model=model, teacher_model=teacher, criterion=criterion,
                                     temperature=args.kd_temperature, epsilon=args.smoothing or 0.0,
                                     form=args.smoothing_form or "uniform", device=device, dtype=model_dtype,
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


class PaperDistillationTask(LogitDistillationTask):
    """timm's logit distillation task with the paper's loss (section 5.3): ``CE(p, softmax(z)) + T^2 *
    CE(softmax(r / T), softmax(z / T))`` (``plugins.tricks.distillation.distillation_loss``), the plain sum.

    ``p`` is the target as the loop gives it: class indices, smoothed with ``epsilon`` in ``form``, or the soft
    targets of mixup (which carry their own smoothing); the teacher sees the same (mixed) images. Its
    ``output`` is the student's logits, as timm's tasks return them.
    """

    def __init__(self, *args, epsilon: float = 0.0, form: str = "uniform", **kwargs):
        super().__init__(*args, **kwargs)
        self.epsilon, self.form = float(epsilon), form

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        student_logits = self.trainable_module(input)
        with torch.no_grad():
            input_kd = self.teacher.normalize_input(input, self.student_mean, self.student_std)
            teacher_logits = self.teacher(input_kd.detach(), return_features=False)
        if target.is_floating_point():
            loss = distillation_loss(student_logits, teacher_logits, target, self.temperature)
        else:
            loss = distillation_loss(student_logits, teacher_logits, target, self.temperature, self.epsilon,
                                     self.form)
        return {"loss": loss, "output": student_logits}


def load_train_checkpoint(path: str, flag: str) -> dict:
    """A checkpoint of tricks-train / timm's train.py, read weights-only (timm's saved ``args`` Namespace is
    the one class allowed besides tensors and plain containers). :class:`UsageError` naming ``flag`` otherwise."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = load_checkpoint(path)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"{flag} {path}: {err}") from None
    if not isinstance(ckpt, dict):
        raise UsageError(f"{flag} {path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    if ckpt.get("format") == BACKBONE_FORMAT or "meta" in ckpt:
        raise UsageError(f"{flag} {path}: a backbone.pth has no classifier; use model_best.pth.tar or "
                         "last.pth.tar of the run")
    return ckpt


def recorded_args(ckpt: dict) -> dict:
    saved = ckpt.get("args")
    return vars(saved) if isinstance(saved, argparse.Namespace) else dict(saved or {})


def load_teacher(path: str, model_name: str | None, student: nn.Module, device) -> nn.Module:
    """The frozen teacher (eval mode, no gradients) of ``--kd-teacher``, built as its run built it."""
    ckpt = load_train_checkpoint(path, "--kd-teacher")
    saved = recorded_args(ckpt)
    state = ckpt.get("state_dict", ckpt.get("model"))
    if state is None and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        state = ckpt  # a plain state_dict file (with --kd-model)
    if not isinstance(state, dict):
        raise UsageError(f"--kd-teacher {path}: no state_dict in it; expected a checkpoint of tricks-train")
    name = model_name or saved.get("model")
    if not name or not timm.is_model(name):
        raise UsageError(f"--kd-teacher {path}: the file does not record a timm model"
                         + (f" ({name!r})" if name else "") + "; pass --kd-model NAME")
    head = [k for k in state if k.endswith(".weight") and state[k].ndim == 2]
    classes = int(state[head[-1]].shape[0]) if head else None
    student_classes = student.num_classes
    if classes is not None and classes != student_classes:
        raise UsageError(f"--kd-teacher {path}: the teacher has {classes} classes, this run {student_classes} "
                         "(--num-classes); a teacher must predict the student's classes")
    kwargs = dict(saved.get("model_kwargs") or {})
    in_chans = next((int(v.shape[1]) for v in state.values() if getattr(v, "ndim", 0) == 4), 3)
    try:
        teacher = create_model(name, num_classes=student_classes, in_chans=in_chans, **kwargs)
        teacher.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as err:
        raise UsageError(f"--kd-teacher {path}: its weights do not fit {name} with {student_classes} classes "
                         f"({str(err)[:300]})") from None
    teacher.requires_grad_(False)
    return teacher.to(device).eval()


def build_datasets(args, input_img_mode: str):
    if args.dataset in BUILT_IN:
        img_size = args.input_size[-1] if args.input_size else args.img_size
        make = partial(built_in_dataset, args.dataset, root=args.data_dir, img_size=img_size, mode=input_img_mode)
        try:
            return make("train", limit=args.train_subset), (make("test", limit=args.val_subset) if args.val_split
                                                            else None)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"--dataset {args.dataset}: {err}") from None
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


def clean_subset_indices(n: int, size: int) -> torch.Tensor:
    """``min(size, n)`` evenly spaced indices of ``n`` training items: the same images in every run and seed."""
    size = min(int(size), int(n))
    return torch.linspace(0, n - 1, size, dtype=torch.float64).round().long().unique()


def build_clean_dataset(args, input_img_mode: str):
    """A fresh copy of the training dataset (its own transform: timm's evaluation one) reduced to
    :func:`clean_subset_indices`, for ``--train-clean-subset``."""
    dataset = build_datasets(args, input_img_mode)[0]
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise UsageError(f"--train-clean-subset {args.train_clean_subset}: needs a map-style training dataset "
                         f"(an image folder, a built-in dataset); {args.dataset!r} is iterable")
    return FixedSubset(dataset, clean_subset_indices(len(dataset), args.train_clean_subset).tolist())


class FixedSubset(torch.utils.data.Dataset):
    """Items ``indices`` of ``dataset``, whose ``transform`` (set by timm's ``create_loader``) is the dataset's."""

    def __init__(self, dataset, indices: list[int]):
        object.__setattr__(self, "dataset", dataset)
        object.__setattr__(self, "indices", list(indices))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]

    def __getattr__(self, name):
        if name in ("dataset", "indices"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __setattr__(self, name, value):
        setattr(self.dataset, name, value)


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


def check_cpu_amp(model, args, device, batch_shape: tuple[int, ...], amp_dtype, repeats: int = 2) -> float | None:
    """On a CPU, time one training update of a copy of ``model`` on a random batch of ``batch_shape`` in float32
    and under ``--amp`` autocast; log the ratio, and a warning naming ``--no-amp`` when autocast is slower.

    Low precision is the paper's speed trick on GPUs; on a CPU it is faster only for some models and batches
    (benchmarks/bench_low_precision.py), so the run says which it is before it starts. The model, the optimizer
    and every random stream of the run are untouched. Returns the float32 / autocast time ratio (None on CUDA).
    """
    import copy
    import time

    if device.type != "cpu":
        return None
    probe = copy.deepcopy(model).train()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_shape, generator=generator).to(device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step(autocast: bool) -> float:
        context = torch.autocast("cpu", dtype=amp_dtype) if autocast else nullcontext()
        start = time.perf_counter()
        with context:
            out = probe(x)
            loss = out.float().logsumexp(dim=1).mean()
        loss.backward()
        probe.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    with torch.random.fork_rng(devices=[]):
        timings = {}
        for autocast in (False, True):
            step(autocast)  # warm-up: kernels chosen, memory allocated
            timings[autocast] = min(step(autocast) for _ in range(repeats))
    ratio = timings[False] / timings[True]
    dtype = str(amp_dtype).replace("torch.", "")
    what = (f"--amp: {dtype} autocast takes {timings[True] * 1e3:.0f} ms per update of {args.model} at batch "
            f"{batch_shape[0]} on this CPU against {timings[False] * 1e3:.0f} ms in float32 ({ratio:.2f}x)")
    if ratio < 1.0:
        _logger.warning(f"{what}: slower here; pass --no-amp to train in float32")
    else:
        _logger.info(what)
    return ratio
