"""Model, optimizer, teacher, the per-update step and evaluation of ``timm_ext.train``.

Every formula comes from ``plugins`` (schedules via :class:`timm_ext.scheduler.TricksScheduler`, param
groups, losses, mixup, zero gamma); this module only wires them into one optimizer update.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import timm
import torch
import torch.distributed as dist
from torch import nn

from plugins.recipe import Recipe
from plugins.runtime.checkpoint import load_checkpoint
from plugins.tricks.distillation import distillation_loss
from plugins.tricks.label_smoothing import (
    label_smoothing_cross_entropy,
    soft_target_cross_entropy,
    uniform_epsilon,
)
from plugins.tricks.mixup import mixup
from plugins.tricks.no_bias_decay import no_bias_decay_param_groups
from plugins.tricks.resnet import zero_gamma_

from ._args import UsageError

__all__ = ["TrainStep", "build_model", "check_model_args", "build_optimizer", "evaluate", "load_teacher", "mixup_epsilon", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _uses_zero_init_last(model_name: str) -> bool:
    # timm's ResNet family zero-inits the last BN of each block unless told otherwise; the tricks_* models
    # accept the same keyword (as an alias of zero_gamma) and default it to False.
    module = timm.models.model_entrypoint(model_name).__module__
    return module in ("timm.models.resnet", f"{__package__}.models")


def check_model_args(model_name: str, model_kwargs=None) -> None:
    """:class:`UsageError` for an unknown model name or ``--model-kwargs`` that other flags own."""
    clash = sorted({"zero_gamma", "zero_init_last", "num_classes", "in_chans", "pretrained"} & set(model_kwargs or {}))
    if clash:
        raise UsageError(f"--model-kwargs {clash}: set these with --zero-gamma/--no-zero-gamma, --num-classes, "
                         "--in-chans (pretrained weights are not available offline)")
    if not timm.is_model(model_name):
        raise UsageError(f"--model {model_name}: not a timm model; e.g. tricks_resnet26nd "
                         "(see timm.list_models('tricks_*'))")


def build_model(model_name: str, num_classes: int, in_chans: int, zero_gamma: bool, model_kwargs=None) -> nn.Module:
    """``timm.create_model(model_name, pretrained=False, ...)`` with zero gamma exactly as the recipe says.

    timm's own ``zero_init_last`` is switched off; zero gamma, when on, is ``plugins.tricks.resnet.zero_gamma_``.
    """
    check_model_args(model_name, model_kwargs)
    model_kwargs = dict(model_kwargs or {})
    if _uses_zero_init_last(model_name):
        model_kwargs["zero_init_last"] = False
    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                  **model_kwargs)
    except (TypeError, ValueError) as err:
        raise UsageError(f"--model {model_name} --model-kwargs {model_kwargs}: {err}") from None
    if zero_gamma:
        try:
            zero_gamma_(model)
        except ValueError as err:
            raise UsageError(f"--zero-gamma with --model {model_name}: {err}") from None
    return model


def build_optimizer(model: nn.Module, recipe: Recipe, opt: str, lr: float) -> torch.optim.Optimizer:
    """SGD (Nesterov or plain momentum, as ``opt``) or AdamW at ``lr``.

    With ``recipe.no_bias_decay`` the params are ``plugins.tricks.no_bias_decay.no_bias_decay_param_groups``; otherwise
    one group decays every parameter (the paper's baseline).
    """
    if recipe.no_bias_decay:
        groups = no_bias_decay_param_groups(model, recipe.weight_decay)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": recipe.weight_decay,
                   "name": "all"}]
    if opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0)


def load_teacher(path: str, model_name: str | None, num_classes: int, in_chans: int, device) -> nn.Module:
    """A frozen teacher (eval mode, no grads) from a checkpoint of this command or a state_dict + ``model_name``."""
    try:
        ckpt = load_checkpoint(path)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"--kd-teacher {path}: {err}") from None
    if isinstance(ckpt, dict) and "meta" in ckpt:
        raise UsageError(f"--kd-teacher {path}: a backbone.pth has no classifier; use last.pth or best.pth of the "
                         "teacher's run")
    train_args = ckpt.get("args") if isinstance(ckpt, dict) else None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        state = ckpt["model"]
    elif isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        state = ckpt["state_dict"]
    else:
        state = ckpt
    name = model_name or (train_args or {}).get("model")
    if name is None:
        raise UsageError(f"--kd-teacher {path}: the file does not record its model; pass --kd-model NAME")
    kwargs = dict((train_args or {}).get("model_kwargs") or {})
    teacher = build_model(name, num_classes, in_chans, zero_gamma=False, model_kwargs=kwargs)
    try:
        teacher.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise UsageError(
            f"--kd-teacher {path}: its weights do not fit {name} with {num_classes} classes and {in_chans} input "
            f"channels (a backbone.pth has no classifier: use last.pth or best.pth) ({str(err)[:300]})"
        ) from None
    teacher.requires_grad_(False)
    return teacher.to(device).eval()


def mixup_epsilon(recipe: Recipe, num_classes: int) -> float:
    """Label smoothing for ``plugins.tricks.mixup`` (uniform form) that gives the recipe's smoothing form."""
    return uniform_epsilon(recipe.label_smoothing, num_classes, recipe.label_smoothing_form)


def _stream_seed(seed: int, rank: int, update: int) -> int:
    return ((seed * 1_000_003 + rank) * 10_000_019 + update) % (2**63)


class TrainStep:
    """One optimizer update of ``timm_ext.train``; call it with the update's images and targets.

    Splits the batch into ``accum_steps`` micro-batches (gradients synchronised only on the last one under
    DDP), mixes each micro-batch with ``plugins.tricks.mixup.mixup`` (generator re-seeded from ``(seed, rank,
    update)``, so a resumed run draws the same lambdas), computes the recipe's loss (label smoothing,
    soft-target CE, or ``distillation_loss`` with the frozen teacher on the same mixed images), steps the
    optimizer and then the per-update scheduler. Returns the update's mean loss as a detached tensor (no sync).

    Args:
        model: the student, possibly DDP-wrapped.
        optimizer / scheduler: the optimizer and a timm-protocol scheduler (``step_update`` after each update).
        recipe: the resolved recipe (smoothing, mixup, distillation temperature).
        num_classes: K of the soft targets.
        teacher: frozen teacher or None.
        amp_dtype: autocast dtype or None (off); scaler: a GradScaler (CUDA float16) or None.
        channels_last: convert inputs to channels-last.
        accum_steps: micro-batches per update (default 1).
        seed / rank: seeds of the mixup draws.
        num_updates: updates already done (the resume position).
    """

    def __init__(self, model, optimizer, scheduler, recipe: Recipe, num_classes: int, teacher=None, amp_dtype=None,
                 scaler=None, channels_last=False, accum_steps=1, seed=0, rank=0, num_updates=0):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.teacher, self.num_classes = teacher, num_classes
        self.epsilon, self.form = recipe.label_smoothing, recipe.label_smoothing_form
        self.mixup_alpha, self.mixup_epsilon = recipe.mixup_alpha, mixup_epsilon(recipe, num_classes)
        self.temperature = recipe.distill_temperature
        self.amp_dtype, self.scaler, self.channels_last = amp_dtype, scaler, channels_last
        self.accum_steps, self.seed, self.rank = accum_steps, seed, rank
        self.num_updates = num_updates
        self.generator = torch.Generator()
        self.ddp = isinstance(model, nn.parallel.DistributedDataParallel)

    def _autocast(self, device_type: str):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.amp_dtype)

    def loss(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The recipe's loss on one micro-batch (mixup drawn from ``self.generator``)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        soft = None
        if self.mixup_alpha > 0:
            images, soft, _ = mixup(images, targets, self.num_classes, self.mixup_alpha, self.generator,
                                    self.mixup_epsilon)
        with self._autocast(images.device.type):
            logits = self.model(images)
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logits = self.teacher(images)
                if soft is not None:
                    return distillation_loss(logits, teacher_logits, soft, self.temperature)
                return distillation_loss(logits, teacher_logits, targets, self.temperature, self.epsilon, self.form)
            if soft is not None:
                return soft_target_cross_entropy(logits, soft)
            return label_smoothing_cross_entropy(logits, targets, self.epsilon, self.form)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        update = self.num_updates + 1
        if self.mixup_alpha > 0:
            self.generator.manual_seed(_stream_seed(self.seed, self.rank, update))
        if self.accum_steps == 1:
            total = self._backward(images, targets, sync=True)
        else:
            total = 0.0
            chunks = list(zip(images.chunk(self.accum_steps), targets.chunk(self.accum_steps), strict=True))
            for k, (x, y) in enumerate(chunks):
                total = total + self._backward(x, y, sync=k == len(chunks) - 1)
            total = total / len(chunks)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.num_updates = update
        self.scheduler.step_update(update)
        return total

    def _backward(self, images, targets, sync: bool) -> torch.Tensor:
        context = self.model.no_sync() if self.ddp and not sync else contextlib.nullcontext()
        with context:
            loss = self.loss(images, targets)
            scaled = loss / self.accum_steps if self.accum_steps > 1 else loss
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return loss.detach()


@dataclass
class EvalResult:
    top1: float
    top5: float
    images: int


@torch.no_grad()
def evaluate(model, batches, device, amp_dtype=None, channels_last=False, distributed=False) -> EvalResult:
    """Top-1 / top-5 accuracy (percent) over every validation image (shards summed across processes)."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=device)
    for images, targets in batches.epoch(0):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        context = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
        with context:
            logits = model(images)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top.eq(targets.unsqueeze(1))
        counts += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(), torch.tensor(len(targets), device=device)])
    if distributed:
        dist.all_reduce(counts)
    seen = max(counts[2].item(), 1.0)
    return EvalResult(100.0 * counts[0].item() / seen, 100.0 * counts[1].item() / seen, int(counts[2].item()))
