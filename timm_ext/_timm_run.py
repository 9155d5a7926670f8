"""The one training run of ``tricks-train``: timm train.py's, built on timm's library, with the paper's parts plugged in.

Model, datasets, loaders with their transforms and prefetcher, mixup/cutmix, losses, the task (classification
or timm's distillation), optimizer and scheduler factories, EMA, checkpoint saving, recovery and resume, BN
distribution and the summary are timm's own functions, called as timm's train.py calls them. ``--recipe`` only
changes flag defaults (``timm_ext._recipe_flags``). The extension enters only where the paper's trick is not timm's:

- ``--sched tricks_cosine`` / ``tricks_step`` / ``tricks_constant``: the paper's lr of every update in closed form
  (``timm_ext.scheduler.TricksScheduler``), the lr scaled linearly by the global batch as ``plugins`` scales it;
- ``--zero-gamma`` / ``--no-zero-gamma``: the models' ``zero_init_last`` in both directions;
- ``--bias-decay``: weight decay on every parameter (timm's optimizer factory filters biases and norms);
- ``--smoothing-form paper``: 1 - eps on the true class and eps/(K-1) on the others, in the loss and in
  mixup's targets (``plugins.tricks.label_smoothing``);
- ``--kd-teacher CKPT``: the paper's distillation on timm's task API (``PaperDistillationTask``);
- ``--dataset fashion_mnist`` / ``fashion_photos``: the built-in real data, offline, through timm's loaders, or
  held in memory when the training transforms are flips only (``timm_ext._timm_data``);
- exact resume: the data order is a function of ``(seed, epoch)``, mixup and item transforms are seeded per
  batch and item, and every checkpoint also holds the position in the epoch and the random streams, so a run
  resumed from ``recovery-*.pth.tar`` or ``last.pth.tar`` continues as if it had not stopped (map-style
  datasets; timm's iterable datasets resume at the epoch);
- ``--amp`` on a CPU: measured against float32 at start, and said when it is slower;
- ``lr_per_step.csv`` and ``lr_curve.png`` (the lr each update used), ``recipe.yaml`` and ``--export-backbone``.

Outputs, as timm's: ``OUTPUT/<experiment or date-model-size>/`` with ``args.yaml`` (written first; ``-c`` repeats
the run), ``summary.csv`` (timm's columns, then ``images_per_s`` and ``epoch_time``), ``last.pth.tar``,
``model_best.pth.tar``, ``checkpoint-<epoch>.pth.tar`` (up to ``--checkpoint-hist``) and
``recovery-<epoch>-<update>.pth.tar`` (``--recovery-interval``), written atomically. Checkpoints load with
``weights_only=True`` (timm's saved ``args`` Namespace is the one class allowed).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import nullcontext
from datetime import datetime
from functools import partial
from pathlib import Path

import torch
from timm import utils
from timm.data import AugMixDataset, Mixup, create_loader, resolve_data_config
from timm.layers import convert_splitbn_model, convert_sync_batchnorm, set_fast_norm
from timm.models import safe_model_name
from timm.task import load_task_ema_checkpoint, resume_task_checkpoint
from timm.utils import NativeScaler

from plugins.runtime.checkpoint import export_backbone
from plugins.runtime.random_state import restore_random_state
from plugins.tricks.lr_schedule import scale_lr

from ._outputs import SUMMARY_EXTRA, RunFiles, atomic_write, check_writable, earlier_rows, write_summary
from ._recipe_flags import resolve_recipe
from ._timm_data import (
    BUILT_IN,
    InMemoryLoader,
    built_in_defaults,
    flips_only,
    in_memory_tensors,
)
from ._timm_loop import train_one_epoch, validate
from ._timm_resume import ResumableSaver, last_saved, make_resumable, read_position
from ._timm_setup import (
    build_clean_dataset,
    build_datasets,
    build_model,
    build_optimizer,
    build_task,
    check_args,
    check_cpu_amp,
    clean_subset_indices,
    loss_fns,
    mixup_smoothing,
    select_device,
    setup_logging,
)
from .cli import UsageError
from .scheduler import TRICKS_SCHEDULES, create_scheduler

__all__ = ["run"]

_logger = logging.getLogger("train")

def run(args, given: set[str], args_text: str) -> dict:  # noqa: C901 (timm's set-up order, kept in one place)
    """Train as timm's train.py would from ``args``; returns ``{"output_dir", "best_metric", "best_epoch"}``."""
    setup_logging()
    check_args(args, given)
    if args.dataset in BUILT_IN:
        built_in_defaults(args, given)
    args.prefetcher = not args.no_prefetcher
    args.grad_accum_steps = max(1, args.grad_accum_steps)
    device = select_device(args, given)
    model_dtype = getattr(torch, args.model_dtype) if args.model_dtype else None
    amp_dtype = torch.bfloat16 if args.amp_dtype == "bfloat16" else torch.float16
    utils.random_seed(args.seed, args.rank)
    if args.fuser:
        utils.set_jit_fuser(args.fuser)
    if args.fast_norm:
        set_fast_norm()

    model, in_chans = build_model(args)
    data_config = resolve_data_config(vars(args), model=model, verbose=utils.is_primary(args))
    recipe = resolve_recipe(args, given)

    num_aug_splits = args.aug_splits if args.aug_splits > 0 else 0
    if num_aug_splits == 1:
        raise UsageError("--aug-splits 1: accepted values are 0 (off) or 2 and more")
    if args.split_bn:
        model = convert_splitbn_model(model, max(num_aug_splits, 2))
    model.to(device=device, dtype=model_dtype)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.distributed and args.sync_bn:
        args.dist_bn = ""
        model = convert_sync_batchnorm(model)
    if args.torchscript:
        model = torch.jit.script(model)

    amp_autocast, loss_scaler = nullcontext, None
    if args.amp:
        amp_autocast = partial(torch.autocast, device_type=device.type, dtype=amp_dtype)
        if device.type == "cuda" and amp_dtype == torch.float16:
            loss_scaler = NativeScaler(device=device.type)

    if args.data and not args.data_dir:
        args.data_dir = args.data
    rank, world = (args.rank, args.world_size) if args.distributed else (0, 1)
    in_memory = (args.dataset in BUILT_IN and flips_only(args) and "mean" not in given and "std" not in given
                 and float(data_config["crop_pct"]) == 1.0)
    input_img_mode = args.input_img_mode or ("RGB" if data_config["input_size"][0] == 3 else "L")
    dataset_train = dataset_eval = None
    if not in_memory:
        dataset_train, dataset_eval = build_datasets(args, input_img_mode)

    mixup_active = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
    mixup_fn = None
    if mixup_active:  # on the batch in this process, seeded per batch (timm_ext._timm_loop)
        mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                         prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                         label_smoothing=mixup_smoothing(args), num_classes=args.num_classes)
    if num_aug_splits > 1:
        dataset_train = AugMixDataset(dataset_train, num_splits=num_aug_splits)

    train_interpolation = args.train_interpolation
    if args.no_aug or not train_interpolation:
        train_interpolation = data_config["interpolation"]
    common = dict(mean=data_config["mean"], std=data_config["std"], pin_memory=args.pin_mem,
                  img_dtype=model_dtype or torch.float32, device=device, distributed=args.distributed,
                  use_prefetcher=args.prefetcher)
    resumable = None
    if in_memory:
        img_size = data_config["input_size"][-1]
        try:
            train_x, train_y = in_memory_tensors(args.dataset, "train", args.data_dir, img_size, in_chans,
                                                 args.train_subset)
            val_x, val_y = in_memory_tensors(args.dataset, "test", args.data_dir, img_size, in_chans, args.val_subset)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"--dataset {args.dataset}: {err}") from None
        loader_train = InMemoryLoader(train_x, train_y, args.batch_size, args.seed, True, rank, world,
                                      0.0 if args.no_aug else args.hflip, device, model_dtype or torch.float32)
        if len(loader_train) < 1:
            raise UsageError(f"-b/--batch-size {args.batch_size}: the training set has {len(train_y)} images, fewer "
                             f"than one batch on each of {world} process(es)")
        resumable = loader_train
        _logger.info(f"--dataset {args.dataset}: in memory, {len(train_y)} training images, flips only "
                     f"(p={loader_train.hflip:g})")
    else:
        loader_train = create_loader(
            dataset_train, input_size=data_config["input_size"], batch_size=args.batch_size, is_training=True,
            no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount,
            re_split=args.resplit, train_crop_mode=args.train_crop_mode, scale=args.scale, ratio=args.ratio,
            hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
            color_jitter_prob=args.color_jitter_prob, grayscale_prob=args.grayscale_prob,
            gaussian_blur_prob=args.gaussian_blur_prob, auto_augment=args.aa, num_aug_repeats=args.aug_repeats,
            num_aug_splits=num_aug_splits, interpolation=train_interpolation, num_workers=args.workers,
            worker_seeding=args.worker_seeding, collate_fn=None,
            use_multi_epochs_loader=args.use_multi_epochs_loader, input_size_choices=args.train_img_sizes,
            batch_size_choices=args.train_batch_sizes, batch_choice_weights=args.train_size_probs,
            batch_choice_seed=args.seed, batch_choice_schedule=args.train_size_schedule,
            batch_schedule_epochs=args.epochs if args.train_size_schedule == "progressive" else None,
            batch_schedule_spread=args.train_size_schedule_spread,
            batch_schedule_random_mix=args.train_size_random_mix, num_batches=args.train_batches_per_epoch,
            **common)
        made = make_resumable(loader_train, args.seed, rank, world)
        if made is not None:
            loader_train, resumable = made
    scheduled_batch_mode = args.train_img_sizes is not None
    batch_reference = (loader_train.batch_sampler.average_batch_size if scheduled_batch_mode
                       else float(args.batch_size))

    if not args.lr and recipe is not None and args.sched in TRICKS_SCHEDULES:
        # the paper's linear scaling rule, computed as plugins computes it (the closed form's peak, bit for bit)
        args.lr = scale_lr(args.lr_base, recipe.batch_size, args.lr_base_size)
        _logger.info(f"Learning rate ({args.lr}) = --lr-base {args.lr_base} x global batch {recipe.batch_size} / "
                     f"--lr-base-size {args.lr_base_size} (linear scaling).")
    if not args.lr:  # timm's rule: lr = lr_base x (global batch / lr_base_size), sqrt-scaled for ada*/lamb
        global_batch = batch_reference * args.world_size * args.grad_accum_steps
        if not args.lr_base_scale:
            args.lr_base_scale = "sqrt" if any(o in args.opt.lower() for o in ("ada", "lamb")) else "linear"
        ratio = global_batch / args.lr_base_size
        args.lr = args.lr_base * (ratio ** 0.5 if args.lr_base_scale == "sqrt" else ratio)
        _logger.info(f"Learning rate ({args.lr}) calculated from base learning rate ({args.lr_base}) and global "
                     f"batch size ({global_batch:g}) with {args.lr_base_scale} scaling.")

    loader_eval = None
    if in_memory:
        loader_eval = InMemoryLoader(val_x, val_y, args.validation_batch_size or args.batch_size, args.seed, False,
                                     rank, world, 0.0, device, model_dtype or torch.float32)
    elif dataset_eval is not None:
        loader_eval = create_loader(dataset_eval, input_size=data_config["input_size"],
                                    batch_size=args.validation_batch_size or args.batch_size, is_training=False,
                                    interpolation=data_config["interpolation"], num_workers=args.workers,
                                    crop_pct=data_config["crop_pct"], **common)

    loader_clean = None  # --train-clean-subset: training images under the evaluation transforms
    if args.train_clean_subset and in_memory:
        keep = clean_subset_indices(len(train_y), args.train_clean_subset)
        loader_clean = InMemoryLoader(train_x[keep], train_y[keep], args.validation_batch_size or args.batch_size,
                                      args.seed, False, rank, world, 0.0, device, model_dtype or torch.float32)
    elif args.train_clean_subset:
        loader_clean = create_loader(build_clean_dataset(args, input_img_mode), input_size=data_config["input_size"],
                                     batch_size=args.validation_batch_size or args.batch_size, is_training=False,
                                     interpolation=data_config["interpolation"], num_workers=args.workers,
                                     crop_pct=data_config["crop_pct"], **common)

    train_loss_fn, validate_loss_fn = loss_fns(args, mixup_active, num_aug_splits, device)
    task = build_task(args, model, train_loss_fn, device, model_dtype)
    model = task.get_trainable_module()
    eval_model = task.get_eval_model()
    optimizer = build_optimizer(args, model)
    if args.amp and utils.is_primary(args):
        check_cpu_amp(model, args, device, (args.batch_size, *data_config["input_size"]), amp_dtype)

    updates_per_epoch = (len(loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    resume_epoch = position = None
    if args.resume:
        if not os.path.isfile(args.resume):
            raise UsageError(f"--resume {args.resume}: no such file")
        position = read_position(args.resume, args.model, updates_per_epoch)
        try:
            resume_epoch = resume_task_checkpoint(task, args.resume,
                                                  optimizer=None if args.no_resume_opt else optimizer,
                                                  loss_scaler=None if args.no_resume_opt else loss_scaler,
                                                  log_info=utils.is_primary(args))
        except (RuntimeError, ValueError, KeyError) as err:
            raise UsageError(f"--resume {args.resume}: it does not fit this command's model or param groups (same "
                             f"--model, --num-classes, --bias-decay and --opt as the interrupted run?): "
                             f"{str(err)[:300]}") from None
    if args.model_ema:
        task.setup_ema(decay=args.model_ema_decay, use_warmup=args.model_ema_warmup,
                       device="cpu" if args.model_ema_force_cpu else None)
        if args.resume:
            load_task_ema_checkpoint(task, args.resume)
    if args.torchcompile:
        task.compile(backend=args.torchcompile, mode=args.torchcompile_mode)
        model, eval_model = task.get_trainable_module(), task.get_eval_model()
        if task.has_ema():
            task.compile_ema(backend=args.torchcompile, mode=args.torchcompile_mode)
    if args.distributed:
        task.prepare_distributed(device_ids=[device] if device.type == "cuda" else None,
                                 broadcast_buffers=not args.no_ddp_bb)
        model = task.get_trainable_module()

    eval_metric = args.eval_metric if loader_eval is not None else "loss"
    decreasing = eval_metric == "loss"
    saver = output_dir = lr_log = None
    if utils.is_primary(args):
        exp_name = args.experiment or "-".join([datetime.now().strftime("%Y%m%d-%H%M%S"),
                                                safe_model_name(args.model), str(data_config["input_size"][-1])])
        check_writable("--output", Path(args.output or "./output/train") / exp_name)
        output_dir = utils.get_outdir(args.output or "./output/train", exp_name)
        saver = ResumableSaver(model=model, optimizer=optimizer, args=args, amp_scaler=loss_scaler,
                               checkpoint_dir=output_dir, recovery_dir=output_dir, decreasing=decreasing,
                               max_history=args.checkpoint_hist, task=task)
        saver.updates_per_epoch = updates_per_epoch
        if args.resume and os.path.dirname(os.path.abspath(args.resume)) == os.path.abspath(output_dir):
            saver.load_state_dict_from_checkpoint(args.resume)  # keep the ranked history of this folder
        lr_log = RunFiles(output_dir, len(optimizer.param_groups))
        records = {"args.yaml": args_text, **({"recipe.yaml": recipe.to_yaml()} if recipe is not None else {})}

        def write_records(records=records, lr_log=lr_log, output_dir=output_dir):
            for name, text in records.items():
                atomic_write(os.path.join(output_dir, name), text)
            records.clear()
            lr_log.flush_lr()

        # In a fresh folder the records come first (timm: -c args.yaml repeats even a crashed run); in a folder
        # that holds a run, with the first checkpoint, so that a command that fails changes nothing there.
        if not os.path.exists(os.path.join(output_dir, "args.yaml")):
            write_records()
        saver.before_save = write_records

    if args.sched in TRICKS_SCHEDULES:  # the closed form is of this command's lr, a resumed optimizer's too
        for group in optimizer.param_groups:
            group["initial_lr"] = args.lr
    lr_scheduler, num_epochs = create_scheduler(args, optimizer, updates_per_epoch, recipe, decreasing)
    start_epoch = args.start_epoch if args.start_epoch is not None else (resume_epoch or 0)
    start_batch, loss_so_far = 0, (0.0, 0)
    if position and args.start_epoch is None and resumable is not None:
        start_epoch, start_batch = int(position["epoch"]), int(position["next_batch"])
        loss_so_far = (float(position["loss_sum"]), int(position["loss_count"]))
        restore_random_state(position["rng"])
        if start_batch:
            _logger.info(f"Resuming epoch {start_epoch} at batch {start_batch} of {len(loader_train)}")
    elif args.resume and position is None:
        _logger.warning(f"--resume {args.resume}: no position recorded in it (not a tricks-train checkpoint); "
                        f"resuming at the start of epoch {start_epoch}, as timm's train.py does")
    done_updates = start_epoch * updates_per_epoch + start_batch // args.grad_accum_steps
    if lr_scheduler is not None and (start_epoch > 0 or done_updates > 0):
        if args.sched_on_updates or args.sched in TRICKS_SCHEDULES:
            lr_scheduler.step_update(done_updates)
        else:
            lr_scheduler.step(start_epoch)
    if lr_log is not None:
        lr_log.start_lr_log(done_updates)
    summary_path = os.path.join(output_dir, "summary.csv") if output_dir else None
    summary_rows = earlier_rows(summary_path, start_epoch) if summary_path and args.resume else []

    best_metric = best_epoch = eval_metrics = None
    results = []
    for epoch in range(start_epoch, num_epochs):
        for part in (loader_train.dataset, getattr(loader_train, "batch_sampler", None),
                     getattr(loader_train, "sampler", None)):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)
                break
        if resumable is not None:
            resumable.set_epoch(epoch)
            resumable.start_batch = start_batch
        train_metrics = train_one_epoch(
            epoch, loader_train, optimizer, args, task=task, device=device, lr_scheduler=lr_scheduler,
            saver=saver, output_dir=output_dir, amp_autocast=amp_autocast, loss_scaler=loss_scaler,
            model_dtype=model_dtype, mixup_fn=mixup_fn, scheduled_batch_mode=scheduled_batch_mode,
            batch_size_reference=batch_reference, on_update=lr_log.log_lr if lr_log else None,
            on_device=in_memory, start_batch=start_batch, loss_so_far=loss_so_far,
            last_saved=last_saved(saver, output_dir))
        start_batch, loss_so_far = 0, (0.0, 0)
        extra = {k: train_metrics.pop(k) for k in SUMMARY_EXTRA if k in train_metrics}
        if lr_log is not None:
            lr_log.flush_lr()
        if args.distributed and args.dist_bn in ("broadcast", "reduce"):
            utils.distribute_bn(model, args.world_size, args.dist_bn == "reduce")
        if saver is not None:
            saver.set_position(epoch=epoch + 1, next_batch=0, loss_sum=0.0, loss_count=0)
        if (epoch + 1) % args.val_interval != 0 and epoch + 1 != num_epochs:
            if lr_scheduler is not None:
                lr_scheduler.step(epoch + 1, metric=None)
            continue
        if loader_eval is not None:
            eval_metrics = validate(eval_model, loader_eval, validate_loss_fn, args, device=device,
                                    amp_autocast=amp_autocast, model_dtype=model_dtype, ece_bins=args.ece_bins)
            ema = task.get_trainable_module(ema=True)
            if ema is not None and not args.model_ema_force_cpu:
                if args.distributed and args.dist_bn in ("broadcast", "reduce"):
                    utils.distribute_bn(ema, args.world_size, args.dist_bn == "reduce")
                eval_metrics = validate(task.get_eval_model(ema=True), loader_eval, validate_loss_fn, args,
                                        device=device, amp_autocast=amp_autocast, log_suffix=" (EMA)",
                                        ece_bins=args.ece_bins)
        if loader_clean is not None:
            clean = validate(eval_model, loader_clean, validate_loss_fn, args, device=device,
                             amp_autocast=amp_autocast, model_dtype=model_dtype, log_suffix=" (train subset)",
                             ece_bins=args.ece_bins)
            extra.update({f"train_clean_{k}": clean[k] for k in ("loss", "top1", "ece") if k in clean})
        if output_dir is not None:
            lrs = [g["lr"] for g in optimizer.param_groups]
            row = {"epoch": epoch, **{f"train_{k}": v for k, v in train_metrics.items()},
                   **{f"eval_{k}": v for k, v in (eval_metrics or {}).items()}, "lr": sum(lrs) / len(lrs), **extra}
            summary_rows.append(row)
            write_summary(summary_path, summary_rows)
        latest = (eval_metrics or train_metrics)[eval_metric]
        if saver is not None:
            best_metric, best_epoch = saver.save_checkpoint(epoch, metric=latest)
        if lr_scheduler is not None:
            lr_scheduler.step(epoch + 1, latest)
        results.append({"epoch": epoch, "train": train_metrics, **({"validation": eval_metrics} if eval_metrics
                                                                    else {})})

    if args.distributed:
        torch.distributed.destroy_process_group()
    if utils.is_primary(args):
        if best_metric is not None:
            _logger.info(f"*** Best metric: {best_metric} (epoch {best_epoch})")
        if lr_log is not None and os.path.getsize(lr_log.path("lr_per_step.csv")) > 0:
            lr_log.plot_lr(f"{args.model}: lr of every update")
        if args.export_backbone:
            from ._recipe_flags import _TRICKS_NAME

            match = _TRICKS_NAME.fullmatch(args.model)
            export_backbone(task.get_eval_model(), args.export_backbone,
                            meta={"model_name": args.model, "variant": match.group(3) if match else None,
                                  "recipe": recipe.to_dict() if recipe is not None else None,
                                  "val_top1": None if eval_metrics is None else float(eval_metrics.get("top1", 0)),
                                  "num_classes": int(args.num_classes), "in_chans": int(in_chans)})
        ordered = sorted(results, key=lambda r: r.get("validation", r["train"]).get(eval_metric, 0),
                         reverse=decreasing)
        print(f"--result\n{json.dumps(ordered[-10:], indent=4)}")
    return {"output_dir": output_dir, "best_metric": best_metric, "best_epoch": best_epoch}
