"""One training epoch and one validation pass of timm's run, on timm's task, loaders and meters.

The order of operations is timm train.py's: forward through the task under autocast, gradient accumulation
(the last, shorter accumulation window of an epoch scaled by its own length), clipping of the task's clip
parameters, the optimizer step, the EMA update, the recovery checkpoint and the per-update scheduler step.
The extension adds:

- ``on_update(step, lrs)``, called with the lrs that each update used (``lr_per_step.csv``);
- a start inside the epoch (``start_batch``, a resumed run's position) with the epoch's running loss so far;
- mixup drawn in the training process from NumPy's stream seeded per batch by ``(seed, rank, epoch, batch)``,
  so that a resumed run draws what the uninterrupted one drew;
- a loss that is not finite stops the run with :class:`NonFiniteLossError`, naming the update and the
  checkpoint that predates it;
- images per second of the epoch's updates (``images_per_s`` in summary.csv), the epoch's wall time and the
  process's CPU time over it (``epoch_time``, ``epoch_cpu_time``: the second does not grow when other work shares
  the cores);
- in validation, optionally the expected calibration error (``--ece-bins``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch
from timm import utils

from plugins.runtime.calibration import CalibrationBins
from plugins.runtime.errors import NonFiniteLossError

_logger = logging.getLogger("train")

__all__ = ["NonFiniteLossError", "batch_seed", "train_one_epoch", "validate"]


def batch_seed(seed: int, rank: int, epoch: int, batch: int) -> int:
    """The NumPy seed of one batch's mixup draw: a function of the run's seed, the process, the epoch and the batch."""
    return ((seed * 1_000_003 + rank) * 10_000_019 + epoch * 1_000_033 + batch) % (2**32)


def _lrs(optimizer) -> list[float]:
    return [float(g["lr"]) for g in optimizer.param_groups]


def _scaled_batch(args, batch_size: int, reference: float) -> float:
    """Loss scale of a variable-size batch (--variable-batch-loss-scale) against the policy-average batch."""
    mode = args.variable_batch_loss_scale
    if not mode or mode == "none":
        return 1.0
    scale = batch_size / reference
    return scale ** 0.5 if mode == "sqrt" else scale


def train_one_epoch(epoch: int, loader, optimizer, args, task, device, lr_scheduler=None, saver=None,
                    output_dir=None, amp_autocast=nullcontext, loss_scaler=None, model_dtype=None, mixup_fn=None,
                    scheduled_batch_mode: bool = False, batch_size_reference: float | None = None,
                    on_update: Callable[[int, list[float]], None] | None = None, on_device: bool = False,
                    start_batch: int = 0, loss_so_far: tuple[float, int] = (0.0, 0),
                    last_saved: str = "") -> OrderedDict:
    """One epoch of timm's loop from batch ``start_batch``; ``on_device``: the loader's batches are already
    tensors on the device (the in-memory built-in data), so they are neither moved nor prefetched."""
    if args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
        if args.prefetcher and getattr(loader, "mixup_enabled", False):
            loader.mixup_enabled = False
        elif mixup_fn is not None:
            mixup_fn.mixup_enabled = False

    second_order = getattr(optimizer, "is_second_order", False)
    module = task.get_trainable_module()
    has_no_sync = args.distributed and hasattr(module, "no_sync")
    module.train()
    update_time, data_time, losses = utils.AverageMeter(), utils.AverageMeter(), utils.AverageMeter()
    losses.sum, losses.count = float(loss_so_far[0]), int(loss_so_far[1])
    losses.avg = losses.sum / losses.count if losses.count else 0.0

    accum = args.grad_accum_steps
    num_batches = len(loader)
    last_accum = num_batches % accum
    updates_per_epoch = (num_batches + accum - 1) // accum
    num_updates = epoch * updates_per_epoch + start_batch // accum
    last_full_window_end = num_batches - last_accum
    rank = args.rank if args.distributed else 0

    optimizer.zero_grad()
    epoch_start = data_start = update_start = time.time()
    cpu_start = time.process_time()
    samples_in_update = samples_in_epoch = 0
    for batch_idx, (inputs, target) in enumerate(loader, start=start_batch):
        last_batch = batch_idx == num_batches - 1
        need_update = last_batch or (batch_idx + 1) % accum == 0
        update_idx = batch_idx // accum
        if batch_idx >= last_full_window_end:
            accum = last_accum
        if not args.prefetcher and not on_device:
            inputs, target = inputs.to(device=device, dtype=model_dtype), target.to(device=device)
        if mixup_fn is not None:
            np.random.seed(batch_seed(args.seed, rank, epoch, batch_idx))
            inputs, target = mixup_fn(inputs, target)
        if args.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        data_time.update(accum * (time.time() - data_start))
        batch_size = inputs.shape[0]
        scale = _scaled_batch(args, batch_size, batch_size_reference) if scheduled_batch_mode else 1.0
        update_lrs = _lrs(optimizer)

        sync = task.no_sync() if has_no_sync and not need_update else nullcontext()
        with sync:
            with amp_autocast():
                loss = task(inputs, target)["loss"]
            if accum > 1:
                loss = loss / accum
            scaled = loss * scale if scale != 1.0 else loss
            clip_params = None
            if args.clip_grad is not None:
                clip_params = task.get_clip_parameters(exclude_head="agc" in args.clip_mode)
            if loss_scaler is not None:
                loss_scaler(scaled, optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                            parameters=clip_params, create_graph=second_order, need_update=need_update)
            else:
                scaled.backward(create_graph=second_order)
                if need_update:
                    if args.clip_grad is not None:
                        utils.dispatch_clip_grad(clip_params, value=args.clip_grad, mode=args.clip_mode)
                    optimizer.step()

        loss_value = loss.item() * accum
        if not math.isfinite(loss_value):
            saved = f"{last_saved} keeps the last good state" if last_saved else "no checkpoint of this run was written"
            raise NonFiniteLossError(
                f"non-finite loss ({loss_value}) at update {num_updates + 1} (epoch {epoch}, batch {batch_idx}): "
                f"training stopped; {saved}. Try a lower --lr / --lr-base, --no-amp, or check the data.")
        losses.update(loss_value, batch_size)
        samples_in_update += batch_size * (args.world_size if args.distributed else 1)
        samples_in_epoch += batch_size * (args.world_size if args.distributed else 1)
        if not need_update:
            data_start = time.time()
            continue

        num_updates += 1
        optimizer.zero_grad()
        task.update_ema(step=num_updates)
        if on_update is not None:
            on_update(num_updates, update_lrs)
        if args.synchronize_step and device.type == "cuda":
            torch.cuda.synchronize()
        now = time.time()
        update_time.update(now - update_start)
        update_start = now

        if update_idx % args.log_interval == 0 or last_batch:
            loss_avg, loss_now = losses.avg, losses.val
            if args.distributed:
                loss_avg = utils.reduce_tensor(loss.new([loss_avg]), args.world_size).item()
                loss_now = utils.reduce_tensor(loss.new([loss_now]), args.world_size).item()
            if utils.is_primary(args):
                lr = sum(_lrs(optimizer)) / len(optimizer.param_groups)
                _logger.info(
                    f"Train: {epoch} [{update_idx:>4d}/{updates_per_epoch} "
                    f"({100.0 * (update_idx + 1) / updates_per_epoch:>3.0f}%)]  "
                    f"Loss: {loss_now:#.3g} ({loss_avg:#.3g})  "
                    f"Time: {update_time.val:.3f}s, {samples_in_update / max(update_time.val, 1e-9):>7.2f}/s  "
                    f"LR: {lr:.3e}  Data: {data_time.val:.3f} ({data_time.avg:.3f})")
                if args.save_images and output_dir:
                    import torchvision.utils

                    torchvision.utils.save_image(inputs, os.path.join(output_dir, f"train-batch-{batch_idx}.jpg"),
                                                 padding=0, normalize=True)
        if saver is not None and args.recovery_interval and (update_idx + 1) % args.recovery_interval == 0:
            if hasattr(saver, "set_position"):
                saver.set_position(epoch=epoch, next_batch=batch_idx + 1, loss_sum=losses.sum,
                                   loss_count=losses.count)
            saver.save_recovery(epoch, batch_idx=update_idx)
        if lr_scheduler is not None:
            lr_scheduler.step_update(num_updates=num_updates, metric=losses.avg)
        samples_in_update = 0
        data_start = time.time()

    if hasattr(optimizer, "sync_lookahead"):
        optimizer.sync_lookahead()
    loss_avg = losses.avg
    if args.distributed:
        loss_avg = utils.reduce_tensor(torch.tensor([loss_avg], device=device), args.world_size).item()
    elapsed = time.time() - epoch_start
    return OrderedDict([("loss", loss_avg), ("images_per_s", samples_in_epoch / elapsed if elapsed > 0 else 0.0),
                        ("epoch_time", elapsed), ("epoch_cpu_time", time.process_time() - cpu_start)])


def validate(model, loader, loss_fn, args, device, amp_autocast=nullcontext, model_dtype=None,
             log_suffix: str = "", ece_bins: int = 0) -> OrderedDict:
    """timm's validation pass; with ``ece_bins`` > 0 also the expected calibration error (``ece``, in percent,
    :mod:`plugins.runtime.calibration`), summed over processes."""
    batch_time, losses, top1, top5 = (utils.AverageMeter() for _ in range(4))
    calibration = CalibrationBins(ece_bins) if ece_bins else None
    model.eval()
    end = time.time()
    last_idx = len(loader) - 1
    with torch.inference_mode():
        for batch_idx, (inputs, target) in enumerate(loader):
            if not args.prefetcher:
                inputs, target = inputs.to(device=device, dtype=model_dtype), target.to(device=device)
            if args.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with amp_autocast():
                output = model(inputs)
                if isinstance(output, tuple | list):
                    output = output[0]
                if args.tta > 1:  # test-time augmentation: average each group of tta outputs
                    output = output.unfold(0, args.tta, args.tta).mean(dim=2)
                    target = target[0:target.size(0):args.tta]
                loss = loss_fn(output, target)
            acc1, acc5 = utils.accuracy(output, target, topk=(1, min(5, output.shape[-1])))
            if calibration is not None:
                calibration.update(output, target)
            if args.distributed:
                loss = utils.reduce_tensor(loss.data, args.world_size)
                acc1 = utils.reduce_tensor(acc1, args.world_size)
                acc5 = utils.reduce_tensor(acc5, args.world_size)
            if device.type == "cuda":
                torch.cuda.synchronize()
            n = output.shape[0]
            losses.update(loss.item(), n)
            top1.update(acc1.item(), n)
            top5.update(acc5.item(), n)
            batch_time.update(time.time() - end)
            end = time.time()
            if utils.is_primary(args) and (batch_idx == last_idx or batch_idx % args.log_interval == 0):
                _logger.info(f"Test{log_suffix}: [{batch_idx:>4d}/{last_idx}]  "
                             f"Time: {batch_time.val:.3f} ({batch_time.avg:.3f})  "
                             f"Loss: {losses.val:>7.3f} ({losses.avg:>6.3f})  "
                             f"Acc@1: {top1.val:>7.3f} ({top1.avg:>7.3f})  Acc@5: {top5.val:>7.3f} ({top5.avg:>7.3f})")
    metrics = OrderedDict([("loss", losses.avg), ("top1", top1.avg), ("top5", top5.avg)])
    if calibration is not None:
        if args.distributed:
            state = calibration.state.to(device)
            torch.distributed.all_reduce(state)
            calibration.state = state.cpu()
        metrics["ece"] = 100.0 * calibration.ece()
    return metrics
