"""``python -m timm_ext.validate --checkpoint PATH --dataset fashion_mnist`` / ``tricks-validate``: top-1 / top-5.

The checkpoint is a ``last.pth`` / ``best.pth`` of ``tricks-train`` (it records the model name, classes, input
channels and size), or a plain state_dict file with ``--model``, ``--num-classes`` and ``--in-chans``.
A ``backbone.pth`` has no classifier and cannot be validated. Bad input exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from plugins.runtime.checkpoint import load_checkpoint

from ._args import UsageError, resolve_dataset
from ._data import DataError, build_data
from ._engine import build_model, evaluate

__all__ = ["build_parser", "main", "validate"]


def build_parser() -> argparse.ArgumentParser:
    """The ``tricks-validate`` argument parser."""
    p = argparse.ArgumentParser(prog="tricks-validate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="last.pth / best.pth of tricks-train")
    p.add_argument("--dataset", choices=("fashion_mnist", "fashion_photos", "imagefolder"), default=None,
                   help="None: the training run's dataset")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="None: the training run's")
    p.add_argument("--model", default=None, help="timm model name (None: the one recorded in the checkpoint)")
    p.add_argument("--num-classes", type=int, default=None, help="None: the one recorded in the checkpoint")
    p.add_argument("--in-chans", type=int, default=None, help="None: the one recorded in the checkpoint")
    p.add_argument("--img-size", type=int, default=None, help="None: the one recorded in the checkpoint")
    p.add_argument("-b", "--batch-size", type=int, default=256, help="images per batch")
    p.add_argument("--val-subset", type=int, default=0, help="use the first N validation images (0: all)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (imagefolder)")
    p.add_argument("--amp", action="store_true", help="autocast (bfloat16 on CPU, float16 on CUDA)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--device", default=None, help="None: cuda if available, else cpu")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def validate(args: argparse.Namespace) -> dict:
    """Evaluate ``args.checkpoint``; return ``{"top1", "top5", "images", "model"}`` (accuracies in percent)."""
    try:
        ckpt = load_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"--checkpoint {args.checkpoint}: {err}") from None
    if not isinstance(ckpt, dict):
        raise UsageError(f"--checkpoint {args.checkpoint}: expected a dict checkpoint, got {type(ckpt).__name__}")
    if "meta" in ckpt and "state_dict" in ckpt:
        raise UsageError(f"--checkpoint {args.checkpoint}: a backbone.pth has no classifier; validate last.pth or "
                         "best.pth of the same run")
    recorded = ckpt.get("args") or {}
    state = ckpt.get("model", ckpt.get("state_dict", ckpt))
    settings = {}
    for name in ("model", "num_classes", "in_chans", "img_size", "dataset", "data_dir"):
        settings[name] = getattr(args, name) if getattr(args, name) is not None else recorded.get(name)
    if settings["model"] is None:
        raise UsageError(f"--checkpoint {args.checkpoint}: the file does not record its model; pass --model")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be an integer >= 1")
    data_args = argparse.Namespace(
        dataset=resolve_dataset(argparse.Namespace(dataset=settings["dataset"], data_dir=settings["data_dir"])),
        data_dir=settings["data_dir"], img_size=settings["img_size"], in_chans=settings["in_chans"],
        batch_size=args.batch_size, grad_accum_steps=1, train_subset=0, val_subset=args.val_subset, hflip=0.0,
        seed=0, workers=args.workers,
    )
    data = build_data(data_args, with_train=False)
    num_classes = settings["num_classes"] or data.num_classes
    model = build_model(settings["model"], num_classes, data.in_chans, zero_gamma=False,
                        model_kwargs=recorded.get("model_kwargs"))
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise UsageError(f"--checkpoint {args.checkpoint}: weights do not fit {settings['model']} "
                         f"({str(err)[:300]})") from None
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.amp else None
    result = evaluate(model, data.val, device, amp_dtype, args.channels_last)
    return {"top1": result.top1, "top5": result.top5, "images": result.images, "model": settings["model"]}


def main(argv: list[str] | None = None) -> int:
    """Console entry point: prints one JSON line; 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        result = validate(args)
    except (UsageError, DataError) as err:
        if args.debug:
            raise
        print(f"tricks-validate: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
