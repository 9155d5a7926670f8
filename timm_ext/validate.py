"""``python -m timm_ext.validate --checkpoint PATH`` / ``tricks-validate``: top-1 / top-5 of a trained model.

The checkpoint is one of ``tricks-train``'s (timm's files: ``model_best.pth.tar``, ``last.pth.tar``,
``checkpoint-*.pth.tar``), read weights-only; it records the model name, classes, input channels and size, the
dataset and its folder, so ``--checkpoint`` alone repeats the run's validation. A plain state_dict file needs
``--model``, ``--num-classes`` and ``--in-chans``. A ``backbone.pth`` has no classifier and cannot be validated.
Bad input exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext

import timm
import torch

from ._timm_data import BUILT_IN, InMemoryLoader, in_memory_tensors
from ._timm_setup import load_train_checkpoint, recorded_args
from .cli import UsageError

__all__ = ["build_parser", "main", "validate"]


def build_parser() -> argparse.ArgumentParser:
    """The ``tricks-validate`` argument parser."""
    p = argparse.ArgumentParser(prog="tricks-validate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="model_best.pth.tar / last.pth.tar of tricks-train")
    p.add_argument("--dataset", choices=(*BUILT_IN, "imagefolder"), default=None,
                   help="None: the training run's")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="None: the training run's")
    p.add_argument("--model", default=None, help="timm model name (None: the one recorded in the checkpoint)")
    p.add_argument("--num-classes", type=int, default=None, help="None: the one recorded in the checkpoint")
    p.add_argument("--in-chans", type=int, default=None, help="None: the one recorded in the checkpoint")
    p.add_argument("--img-size", type=int, default=None, help="None: the one recorded in the checkpoint")
    p.add_argument("-b", "--batch-size", type=int, default=256, help="images per batch")
    p.add_argument("--val-subset", type=int, default=None, help="the first N validation images (None: the run's)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (imagefolder)")
    p.add_argument("--amp", action="store_true", help="autocast (bfloat16 on CPU, float16 on CUDA)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--use-ema", action="store_true", help="validate the EMA weights (state_dict_ema)")
    p.add_argument("--device", default=None, help="None: cuda if available, else cpu")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _image_folder_batches(data_dir: str, img_size: int, in_chans: int, batch_size: int, workers: int, recorded):
    from timm.data import create_dataset, create_loader, resolve_data_config

    split = recorded.get("val_split") or "validation"
    try:
        dataset = create_dataset("", root=data_dir, split=split, is_training=False)
    except (AssertionError, FileNotFoundError, RuntimeError) as err:
        raise UsageError(f"--data-dir {data_dir} (split {split!r}): {err}") from None
    config = resolve_data_config({"input_size": (in_chans, img_size, img_size),
                                  "crop_pct": recorded.get("crop_pct"), "mean": recorded.get("mean"),
                                  "std": recorded.get("std"), "interpolation": recorded.get("interpolation") or ""})
    return create_loader(dataset, input_size=config["input_size"], batch_size=batch_size, is_training=False,
                         interpolation=config["interpolation"], mean=config["mean"], std=config["std"],
                         crop_pct=config["crop_pct"], num_workers=workers, use_prefetcher=False)


def validate(args: argparse.Namespace) -> dict:
    """Evaluate ``args.checkpoint``; return ``{"top1", "top5", "images", "model"}`` (accuracies in percent)."""
    ckpt = load_train_checkpoint(args.checkpoint, "--checkpoint")
    recorded = recorded_args(ckpt)
    key = "state_dict_ema" if args.use_ema else "state_dict"
    state = ckpt.get(key, ckpt.get("model") if not args.use_ema else None)
    if state is None and all(torch.is_tensor(v) for v in ckpt.values()):
        state = ckpt
    if not isinstance(state, dict):
        raise UsageError(f"--checkpoint {args.checkpoint}: no {key} in it (EMA weights exist only with --model-ema)")
    settings = {name: getattr(args, name) if getattr(args, name) is not None else recorded.get(name)
                for name in ("model", "num_classes", "in_chans", "img_size", "dataset", "data_dir", "val_subset")}
    if not settings["model"]:
        raise UsageError(f"--checkpoint {args.checkpoint}: the file does not record its model; pass --model")
    if not timm.is_model(settings["model"]):
        raise UsageError(f"--model {settings['model']}: not a timm model")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be an integer >= 1")
    dataset = settings["dataset"] or ("imagefolder" if settings["data_dir"] else None)
    in_chans = settings["in_chans"] or next((int(v.shape[1]) for v in state.values() if v.ndim == 4), 3)
    img_size = settings["img_size"] or {"fashion_mnist": 28, "fashion_photos": 32}.get(dataset, 224)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dataset in BUILT_IN:
        try:
            x, y = in_memory_tensors(dataset, "test", settings["data_dir"], img_size, in_chans,
                                     settings["val_subset"] or 0)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"--dataset {dataset}: {err}") from None
        batches = InMemoryLoader(x, y, args.batch_size, train=False, device=device)
    elif settings["data_dir"]:
        batches = _image_folder_batches(settings["data_dir"], img_size, in_chans, args.batch_size, args.workers,
                                        recorded)
    else:
        raise UsageError("no data: pass --dataset fashion_mnist / fashion_photos or --data-dir DIR (the checkpoint "
                         "records neither)")
    head = [k for k in state if k.endswith(".weight") and state[k].ndim == 2]
    num_classes = settings["num_classes"] or (int(state[head[-1]].shape[0]) if head else 1000)
    model = timm.create_model(settings["model"], num_classes=num_classes, in_chans=in_chans,
                              **dict(recorded.get("model_kwargs") or {}))
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise UsageError(f"--checkpoint {args.checkpoint}: weights do not fit {settings['model']} "
                         f"({str(err)[:300]})") from None
    model = model.to(device).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
    hits1 = hits5 = seen = 0
    with torch.inference_mode():
        for images, targets in batches:
            images, targets = images.to(device), targets.to(device)
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with amp if args.amp else nullcontext():
                logits = model(images)
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets.unsqueeze(1))
            hits1 += int(top[:, 0].sum())
            hits5 += int(top.any(dim=1).sum())
            seen += len(targets)
    seen = max(seen, 1)
    return {"top1": 100.0 * hits1 / seen, "top5": 100.0 * hits5 / seen, "images": seen, "model": settings["model"]}


def main(argv: list[str] | None = None) -> int:
    """Console entry point: prints one JSON line; 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        result = validate(args)
    except UsageError as err:
        if args.debug:
            raise
        print(f"tricks-validate: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
