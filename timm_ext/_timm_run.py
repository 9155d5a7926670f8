"""The run timm's train.py makes from a timm command line, built on timm's library (no ``--recipe``).

Model, datasets, loaders with their transforms and prefetcher, mixup/cutmix, losses, the task (classification
or timm's distillation), optimizer and scheduler factories, EMA, checkpoint saving, recovery and resume, BN
distribution and the summary are timm's own functions, called as timm's train.py calls them. The extension
enters only where the paper's trick is not timm's:

- ``--zero-gamma`` / ``--no-zero-gamma``: the models' ``zero_init_last`` in both directions;
- ``--bias-decay``: weight decay on every parameter (timm's optimizer factory filters biases and norms);
- ``--smoothing-form paper``: 1 - eps on the true class and eps/(K-1) on the others (``plugins.tricks.label_smoothing``);
- ``--dataset fashion_mnist`` / ``fashion_photos``: the built-in real data, offline, through timm's loaders;
- ``lr_per_step.csv`` and ``lr_curve.png`` (the lr each update used) and ``--export-backbone``.

Outputs, as timm's: ``OUTPUT/<experiment or date-model-size>/`` with ``args.yaml`` (written first; ``-c`` repeats
the run), ``summary.csv``, ``last.pth.tar``, ``model_best.pth.tar``, ``checkpoint-<epoch>.pth.tar`` (up to
``--checkpoint-hist``) and ``recovery-<epoch>-<update>.pth.tar`` (``--recovery-interval``). Checkpoints load with
``weights_only=True`` (timm allows ``argparse.Namespace`` for the saved args).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import nullcontext
from datetime import datetime
from functools import partial

import torch
from timm import utils
from timm.data import (
    AugMixDataset,
    FastCollateMixup,
    Mixup,
    create_loader,
    resolve_data_config,
)
from timm.layers import convert_splitbn_model, convert_sync_batchnorm, set_fast_norm
from timm.models import safe_model_name
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.task import (
    load_task_ema_checkpoint,
    resume_task_checkpoint,
)
from timm.utils import NativeScaler

from plugins.runtime.checkpoint import export_backbone

from ._outputs import RunFiles
from ._timm_data import BUILT_IN, built_in_defaults
from ._timm_loop import train_one_epoch, validate
from ._timm_setup import (
    build_datasets,
    build_model,
    build_optimizer,
    build_task,
    check_args,
    loss_fns,
    select_device,
    setup_logging,
)
from .cli import UsageError

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
    input_img_mode = args.input_img_mode or ("RGB" if data_config["input_size"][0] == 3 else "L")
    dataset_train, dataset_eval = build_datasets(args, input_img_mode)

    mixup_active = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
    mixup_args = dict(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                      prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                      label_smoothing=args.smoothing, num_classes=args.num_classes)
    collate_fn = mixup_fn = None
    if mixup_active and args.prefetcher:
        if num_aug_splits:
            raise UsageError("--aug-splits with --mixup/--cutmix needs --no-prefetcher")
        collate_fn = FastCollateMixup(**mixup_args)
    elif mixup_active:
        mixup_fn = Mixup(**mixup_args)
    if num_aug_splits > 1:
        dataset_train = AugMixDataset(dataset_train, num_splits=num_aug_splits)

    train_interpolation = args.train_interpolation
    if args.no_aug or not train_interpolation:
        train_interpolation = data_config["interpolation"]
    common = dict(mean=data_config["mean"], std=data_config["std"], pin_memory=args.pin_mem,
                  img_dtype=model_dtype or torch.float32, device=device, distributed=args.distributed,
                  use_prefetcher=args.prefetcher)
    loader_train = create_loader(
        dataset_train, input_size=data_config["input_size"], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount, re_split=args.resplit,
        train_crop_mode=args.train_crop_mode, scale=args.scale, ratio=args.ratio, hflip=args.hflip,
        vflip=args.vflip, color_jitter=args.color_jitter, color_jitter_prob=args.color_jitter_prob,
        grayscale_prob=args.grayscale_prob, gaussian_blur_prob=args.gaussian_blur_prob, auto_augment=args.aa,
        num_aug_repeats=args.aug_repeats, num_aug_splits=num_aug_splits, interpolation=train_interpolation,
        num_workers=args.workers, worker_seeding=args.worker_seeding, collate_fn=collate_fn,
        use_multi_epochs_loader=args.use_multi_epochs_loader, input_size_choices=args.train_img_sizes,
        batch_size_choices=args.train_batch_sizes, batch_choice_weights=args.train_size_probs,
        batch_choice_seed=args.seed, batch_choice_schedule=args.train_size_schedule,
        batch_schedule_epochs=args.epochs if args.train_size_schedule == "progressive" else None,
        batch_schedule_spread=args.train_size_schedule_spread,
        batch_schedule_random_mix=args.train_size_random_mix, num_batches=args.train_batches_per_epoch, **common)
    scheduled_batch_mode = args.train_img_sizes is not None
    batch_reference = (loader_train.batch_sampler.average_batch_size if scheduled_batch_mode
                       else float(args.batch_size))

    if not args.lr:  # timm's rule: lr = lr_base x (global batch / lr_base_size), sqrt-scaled for ada*/lamb
        global_batch = batch_reference * args.world_size * args.grad_accum_steps
        if not args.lr_base_scale:
            args.lr_base_scale = "sqrt" if any(o in args.opt.lower() for o in ("ada", "lamb")) else "linear"
        ratio = global_batch / args.lr_base_size
        args.lr = args.lr_base * (ratio ** 0.5 if args.lr_base_scale == "sqrt" else ratio)
        _logger.info(f"Learning rate ({args.lr}) calculated from base learning rate ({args.lr_base}) and global "
                     f"batch size ({global_batch:g}) with {args.lr_base_scale} scaling.")

    loader_eval = None
    if dataset_eval is not None:
        loader_eval = create_loader(dataset_eval, input_size=data_config["input_size"],
                                    batch_size=args.validation_batch_size or args.batch_size, is_training=False,
                                    interpolation=data_config["interpolation"], num_workers=args.workers,
                                    crop_pct=data_config["crop_pct"], **common)

    train_loss_fn, validate_loss_fn = loss_fns(args, mixup_active, num_aug_splits, device)
    task = build_task(args, model, train_loss_fn, device, model_dtype)
    model = task.get_trainable_module()
    eval_model = task.get_eval_model()
    optimizer = build_optimizer(args, model)

    resume_epoch = None
    if args.resume:
        if not os.path.isfile(args.resume):
            raise UsageError(f"--resume {args.resume}: no such file")
        resume_epoch = resume_task_checkpoint(task, args.resume, optimizer=None if args.no_resume_opt else optimizer,
                                              loss_scaler=None if args.no_resume_opt else loss_scaler,
                                              log_info=utils.is_primary(args))
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
        output_dir = utils.get_outdir(args.output or "./output/train", exp_name)
        saver = utils.CheckpointSaver(model=model, optimizer=optimizer, args=args, amp_scaler=loss_scaler,
                                      checkpoint_dir=output_dir, recovery_dir=output_dir, decreasing=decreasing,
                                      max_history=args.checkpoint_hist, task=task)
        if args.resume and os.path.dirname(os.path.abspath(args.resume)) == os.path.abspath(output_dir):
            saver.load_state_dict_from_checkpoint(args.resume)  # keep the ranked history of this folder
        with open(os.path.join(output_dir, "args.yaml"), "w") as f:
            f.write(args_text)
        lr_log = RunFiles(output_dir, len(optimizer.param_groups))

    updates_per_epoch = (len(loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    lr_scheduler, num_epochs = create_scheduler_v2(optimizer, **scheduler_kwargs(args, decreasing_metric=decreasing),
                                                   updates_per_epoch=updates_per_epoch)
    start_epoch = args.start_epoch if args.start_epoch is not None else (resume_epoch or 0)
    if lr_scheduler is not None and start_epoch > 0:
        if args.sched_on_updates:
            lr_scheduler.step_update(start_epoch * updates_per_epoch)
        else:
            lr_scheduler.step(start_epoch)
    if lr_log is not None:
        lr_log.start_lr_log(start_epoch * updates_per_epoch)

    best_metric = best_epoch = eval_metrics = None
    results = []
    for epoch in range(start_epoch, num_epochs):
        for part in (loader_train.dataset, loader_train.batch_sampler, loader_train.sampler):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)
                break
        train_metrics = train_one_epoch(
            epoch, loader_train, optimizer, args, task=task, device=device, lr_scheduler=lr_scheduler,
            saver=saver, output_dir=output_dir, amp_autocast=amp_autocast, loss_scaler=loss_scaler,
            model_dtype=model_dtype, mixup_fn=mixup_fn, scheduled_batch_mode=scheduled_batch_mode,
            batch_size_reference=batch_reference, on_update=lr_log.log_lr if lr_log else None)
        if lr_log is not None:
            lr_log.flush_lr()
        if args.distributed and args.dist_bn in ("broadcast", "reduce"):
            utils.distribute_bn(model, args.world_size, args.dist_bn == "reduce")
        if (epoch + 1) % args.val_interval != 0 and epoch + 1 != num_epochs:
            if lr_scheduler is not None:
                lr_scheduler.step(epoch + 1, metric=None)
            continue
        if loader_eval is not None:
            eval_metrics = validate(eval_model, loader_eval, validate_loss_fn, args, device=device,
                                    amp_autocast=amp_autocast, model_dtype=model_dtype)
            ema = task.get_trainable_module(ema=True)
            if ema is not None and not args.model_ema_force_cpu:
                if args.distributed and args.dist_bn in ("broadcast", "reduce"):
                    utils.distribute_bn(ema, args.world_size, args.dist_bn == "reduce")
                eval_metrics = validate(task.get_eval_model(ema=True), loader_eval, validate_loss_fn, args,
                                        device=device, amp_autocast=amp_autocast, log_suffix=" (EMA)")
        if output_dir is not None:
            lrs = [g["lr"] for g in optimizer.param_groups]
            summary = os.path.join(output_dir, "summary.csv")
            utils.update_summary(epoch, train_metrics, eval_metrics, filename=summary, lr=sum(lrs) / len(lrs),
                                 write_header=not os.path.exists(summary))
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
            export_backbone(task.get_eval_model(), args.export_backbone,
                            meta={"model_name": args.model, "variant": None, "recipe": None,
                                  "val_top1": None if eval_metrics is None else float(eval_metrics.get("top1", 0)),
                                  "num_classes": int(args.num_classes), "in_chans": int(in_chans)})
        ordered = sorted(results, key=lambda r: r.get("validation", r["train"]).get(eval_metric, 0),
                         reverse=decreasing)
        print(f"--result\n{json.dumps(ordered[-10:], indent=4)}")
    return {"output_dir": output_dir, "best_metric": best_metric, "best_epoch": best_epoch}
