"""The recipe engine's loop (``tricks-train --recipe``): set-up, epochs of updates, evaluation, outputs.

The lr is set before every update from ``plugins.tricks.lr_schedule`` (through :class:`timm_ext.TricksScheduler`):
``recipe.lr_at(i, steps_per_epoch)`` for update ``i``, with the linear scaling rule applied to the global
batch (``-b`` x world size x ``--grad-accum-steps``) unless ``--lr`` gives the lr itself. Under ``torchrun``
(``WORLD_SIZE > 1``) it runs DDP (gloo on CPU, nccl on CUDA), each process taking every ``world_size``-th image
of the epoch's order.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from plugins.recipe import Recipe
from plugins.runtime.checkpoint import export_backbone, save_checkpoint

from ._args import build_parser, resolve_recipe
from ._data import DataBundle, build_data
from ._engine import TrainStep, build_model, build_optimizer, check_model_args, evaluate, load_teacher, unwrap
from ._outputs import RunFiles, check_writable
from ._recipe_state import Position, check_finite, checkpoint_state, loss_sum, resume
from .cli import UsageError
from .scheduler import create_tricks_scheduler

__all__ = ["TrainResult", "run", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns: per-epoch ``history`` rows (as summary.csv), the loss and the lrs of every
    update this process ran (``step_losses``, ``lrs`` per param group), the output folder and the recipe."""

    history: list[dict]
    step_losses: list[float]
    lrs: list[list[float]]
    output: Path
    recipe: Recipe
    args: argparse.Namespace


def _distributed() -> tuple[int, int, int]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if world_size > 1:
        return dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def _device(args, local_rank: int) -> torch.device:
    if args.device:
        try:
            device = torch.device(args.device)
        except RuntimeError as err:
            raise UsageError(f"--device {args.device}: {err}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: CUDA is not available here; accepted: cpu")
        return device
    return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def train(args: argparse.Namespace) -> TrainResult:
    """Run training for parsed ``args`` (from :func:`build_parser`); see the module docstring.

    Raises :class:`UsageError` / ``DataError`` (bad input, message names the flag) and
    :class:`NonFiniteLossError`.
    """
    rank, world_size, local_rank = _distributed()
    try:
        return _train(args, rank, world_size, local_rank)
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class _Run:
    """Everything one training run holds, built by :func:`_setup`."""

    args: argparse.Namespace
    recipe: Recipe
    device: torch.device
    files: RunFiles | None  # None on ranks other than 0
    data: DataBundle
    step: TrainStep
    steps_per_epoch: int
    pos: Position
    rank: int
    world_size: int
    amp_dtype: torch.dtype | None
    all_losses: list[torch.Tensor] = field(default_factory=list)
    all_lrs: list[list[float]] = field(default_factory=list)
    last_saved: int = 0
    config_written: bool = False

    @property
    def main_process(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def log(self, message: str) -> None:
        if self.main_process:
            print(message, flush=True)

    def save(self, epoch_losses: list[torch.Tensor], best: bool = False) -> None:
        """Write last.pth (and best.pth) on rank 0; ``epoch_losses`` are this epoch's updates so far."""
        if self.main_process:
            if not self.config_written:  # written with the first checkpoint, so that they describe it
                self.files.write_yaml("args.yaml", vars(self.args))
                self.files.write_yaml("recipe.yaml", self.recipe.to_dict())
                self.config_written = True
            self.files.flush_lr()
            state = checkpoint_state(self.step, self.pos, self.args, self.recipe, self.steps_per_epoch, epoch_losses)
            save_checkpoint(state, self.files.path("last.pth"))
            if best:
                save_checkpoint(state, self.files.path("best.pth"))
        self.last_saved = self.pos.global_step


def _setup(args, rank: int, world_size: int, local_rank: int) -> _Run:
    recipe, args = resolve_recipe(args, world_size)
    device = _device(args, local_rank)
    files = RunFiles(args.output, 2 if recipe.no_bias_decay else 1) if rank == 0 else None
    if args.export_backbone and rank == 0:
        check_writable("--export-backbone", Path(args.export_backbone).parent)
    check_model_args(args.model, args.model_kwargs)
    data = build_data(args, rank, world_size)
    num_classes = args.num_classes or data.num_classes
    args.num_classes, args.in_chans, args.img_size = num_classes, data.in_chans, data.img_size
    torch.manual_seed(args.seed)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = build_model(args.model, num_classes, data.in_chans, recipe.zero_gamma, args.model_kwargs)
    model = model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(model, recipe, args.opt, recipe.scaled_lr())
    steps_per_epoch = data.train.num_batches
    scheduler = create_tricks_scheduler(optimizer, recipe, steps_per_epoch)
    teacher = None
    if recipe.distill_teacher:
        teacher = load_teacher(recipe.distill_teacher, args.kd_model, num_classes, data.in_chans, device)
        teacher = teacher.to(memory_format=memory_format)
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if recipe.amp else None
    scaler = torch.amp.GradScaler("cuda") if recipe.amp and device.type == "cuda" else None
    step = TrainStep(model, optimizer, scheduler, recipe, num_classes, teacher=teacher, amp_dtype=amp_dtype,
                     scaler=scaler, channels_last=args.channels_last, accum_steps=args.grad_accum_steps,
                     seed=args.seed, rank=rank)
    run = _Run(args, recipe, device, files, data, step, steps_per_epoch, Position(), rank, world_size, amp_dtype)
    run.log(f"tricks-train: model {args.model}, dataset {args.dataset}, optimizer {args.opt}, {world_size} "
            f"process(es), device {device}, output {args.output}\nresolved recipe:\n{recipe.to_yaml().rstrip()}")
    if args.resume:
        run.pos = resume(args.resume, step, steps_per_epoch, recipe, run.log)
        run.last_saved = run.pos.global_step
    if world_size > 1:
        step.model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        step.ddp = True
    if files is not None:
        files.start_lr_log(run.pos.global_step)
    run.log(f"{steps_per_epoch} updates per epoch of {args.batch_size * world_size * args.grad_accum_steps} images, "
            f"peak lr {recipe.scaled_lr():g}" + (f", resuming after update {run.pos.global_step}" if args.resume else ""))
    return run


def _train_epoch(run: _Run, epoch: int) -> list[torch.Tensor]:
    """The updates of one epoch (from the resume position); returns their detached losses."""
    args, pos, step = run.args, run.pos, run.step
    step.model.train()
    epoch_losses: list[torch.Tensor] = []
    checked, first_update = 0, pos.global_step + 1
    bar = tqdm(total=run.steps_per_epoch, initial=pos.step_in_epoch, desc=f"epoch {epoch + 1}/{run.recipe.epochs}",
               disable=args.no_progress or not run.main_process, leave=False, dynamic_ncols=True)
    for images, targets in run.data.train.epoch(epoch, pos.step_in_epoch):
        images, targets = images.to(run.device, non_blocking=True), targets.to(run.device, non_blocking=True)
        lrs = [group["lr"] for group in step.optimizer.param_groups]
        loss = step(images, targets)
        pos.global_step += 1
        pos.step_in_epoch += 1
        epoch_losses.append(loss)
        run.all_lrs.append(lrs)
        if run.files is not None:
            run.files.log_lr(pos.global_step, lrs)
        bar.update(1)
        save_now = args.checkpoint_interval and pos.global_step % args.checkpoint_interval == 0
        if save_now or pos.step_in_epoch % args.log_interval == 0:  # the only syncs: logging and checkpoints
            check_finite(epoch_losses[checked:], first_update + checked, run.distributed, run.last_saved)
            checked = len(epoch_losses)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lrs[0]:.4g}")
        if save_now and pos.step_in_epoch < run.steps_per_epoch:
            run.save(epoch_losses)
    bar.close()
    check_finite(epoch_losses[checked:], first_update + checked, run.distributed, run.last_saved)
    return epoch_losses


def _end_epoch(run: _Run, epoch: int, epoch_losses: list[torch.Tensor], start_time: float) -> None:
    """Evaluate, append the summary row, write last.pth / best.pth and summary.csv."""
    args, pos = run.args, run.pos
    train_time = time.perf_counter() - start_time
    # Losses of this epoch from before a resume are known only to rank 0 (it wrote the checkpoint).
    earlier = (pos.loss_sum, pos.loss_count) if run.main_process else (0.0, 0)
    loss_stats = torch.tensor([earlier[0] + loss_sum(epoch_losses), earlier[1] + len(epoch_losses)], dtype=torch.float64)
    if run.distributed:
        loss_stats = loss_stats.to(run.device)
        dist.all_reduce(loss_stats)
    result = evaluate(run.step.model, run.data.val, run.device, run.amp_dtype, args.channels_last, run.distributed)
    images_done = len(epoch_losses) * args.batch_size * args.grad_accum_steps * run.world_size
    row = {"epoch": epoch + 1, "train_loss": float(loss_stats[0] / max(loss_stats[1].item(), 1.0)),
           "val_top1": result.top1, "val_top5": result.top5,
           "lr": run.all_lrs[-1][0] if run.all_lrs else run.step.optimizer.param_groups[0]["lr"],
           "images_per_s": images_done / train_time if train_time > 0 else 0.0,
           "epoch_time": time.perf_counter() - start_time}
    pos.history.append(row)
    run.all_losses.extend(epoch_losses)
    pos.epoch, pos.step_in_epoch, pos.loss_sum, pos.loss_count = epoch + 1, 0, 0.0, 0
    best = pos.best_top1 is None or result.top1 > pos.best_top1
    if best:
        pos.best_top1 = result.top1
    run.save([], best=best)
    if run.files is not None:
        run.files.write_summary(pos.history)
    run.log(f"epoch {epoch + 1}/{run.recipe.epochs}: train_loss {row['train_loss']:.4f}  val_top1 {row['val_top1']:.2f}  "
            f"val_top5 {row['val_top5']:.2f}  lr {row['lr']:.4g}  {row['images_per_s']:.0f} images/s  "
            f"{row['epoch_time']:.1f} s")


def _finish(run: _Run) -> None:
    """backbone.pth (and the --export-backbone copy), summary.csv and lr_curve.png, on rank 0."""
    if run.files is None:
        return
    args, recipe, history = run.args, run.recipe, run.pos.history
    meta = {"model_name": args.model, "variant": recipe.variant, "recipe": recipe.to_dict(),
            "val_top1": history[-1]["val_top1"] if history else 0.0, "num_classes": args.num_classes,
            "in_chans": args.in_chans}
    model = unwrap(run.step.model)
    export_backbone(model, run.files.path("backbone.pth"), meta)
    if args.export_backbone:
        export_backbone(model, args.export_backbone, meta)
    run.files.write_summary(history)
    run.files.plot_lr(f"{args.model}, recipe {recipe.name or args.recipe}: {recipe.schedule} schedule")
    run.log(f"done: best val_top1 {run.pos.best_top1:.2f}, outputs in {run.files.root}")


def _train(args, rank: int, world_size: int, local_rank: int) -> TrainResult:
    run = _setup(args, rank, world_size, local_rank)
    for epoch in range(run.pos.epoch, run.recipe.epochs):
        start_time = time.perf_counter()
        epoch_losses = _train_epoch(run, epoch)
        _end_epoch(run, epoch, epoch_losses, start_time)
    _finish(run)
    losses = torch.stack(run.all_losses).tolist() if run.all_losses else []
    return TrainResult(run.pos.history, losses, run.all_lrs, Path(run.args.output), run.recipe, run.args)


def run(argv: list[str] | None = None) -> TrainResult:
    """Parse ``argv`` (argparse exits with status 2 on a malformed flag) and :func:`train`."""
    return train(build_parser().parse_args(argv))
