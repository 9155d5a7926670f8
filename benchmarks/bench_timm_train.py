"""Train-step time of ``timm_ext.train``'s step against a plain timm loop with the same tricks, side by side.

    python benchmarks/bench_timm_train.py --threads 1 --steps 60

Both sides train the same model (same initial weights) on the same batches with the same tricks:
warmup + cosine lr per update, no bias decay, zero gamma, uniform label smoothing 0.1 and mixup 0.2.
- ``timm_ext``: :class:`timm_ext.train.TrainStep` (plugins losses and mixup, ``TricksScheduler``);
- ``plain timm``: ``create_optimizer_v2("sgd")`` (Nesterov, ``filter_bias_and_bn``), ``CosineLRScheduler``
  stepped per update, ``Mixup`` + ``SoftTargetCrossEntropy``, timm's ``zero_init_last``.

Steps run interleaved (one of each per round, alternating which goes first) so that load on a shared machine
hits both alike; the figure is the median over rounds after warmup, and the ratio is timm_ext / plain timm
(the target is <= 1.03). On the CPU with one thread the clock is this thread's CPU time; otherwise wall time
(with a CUDA synchronize around each step).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
from timm.data import Mixup  # noqa: E402
from timm.loss import SoftTargetCrossEntropy  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402
from timm.scheduler import CosineLRScheduler  # noqa: E402

from plugins.recipe import Recipe  # noqa: E402
from timm_ext._engine import build_model, build_optimizer  # noqa: E402
from timm_ext.scheduler import create_tricks_scheduler  # noqa: E402
from timm_ext.train import TrainStep  # noqa: E402


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tricks_resnet26nd", help="timm model (default: tricks_resnet26nd)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    p.add_argument("--img-size", type=int, default=28, help="input side (default: 28)")
    p.add_argument("--in-chans", type=int, default=1, help="input channels (default: 1)")
    p.add_argument("--steps", type=int, default=60, help="measured rounds (default: 60)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first (default: 3)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--amp", action="store_true", help="autocast both sides (bf16 on CPU, fp16 + scaler on CUDA)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = args.warmup + args.steps
    recipe = Recipe.preset("paper").with_overrides(
        batch_size=args.batch_size, epochs=2, warmup_epochs=1, label_smoothing=0.1, label_smoothing_form="uniform",
        mixup_alpha=0.2, amp=args.amp)
    steps_per_epoch = steps  # two "epochs": the run ends inside the cosine half
    lr = recipe.scaled_lr()
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.amp else None

    torch.manual_seed(0)
    ours_model = build_model(args.model, 10, args.in_chans, zero_gamma=True).to(device)
    ours_opt = build_optimizer(ours_model, recipe, "nesterov", lr)
    scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None
    ours = TrainStep(ours_model, ours_opt, create_tricks_scheduler(ours_opt, recipe, steps_per_epoch), recipe, 10,
                     amp_dtype=amp_dtype, scaler=scaler, seed=0)

    torch.manual_seed(0)
    timm_kwargs = {"zero_init_last": True} if args.model.startswith("tricks_") else {}
    plain_model = timm.create_model(args.model, num_classes=10, in_chans=args.in_chans, **timm_kwargs).to(device)
    plain_opt = create_optimizer_v2(plain_model, "sgd", lr=lr, weight_decay=recipe.weight_decay, momentum=0.9)
    warmup = recipe.warmup_steps(steps_per_epoch)
    plain_sched = CosineLRScheduler(plain_opt, t_initial=recipe.total_steps(steps_per_epoch) - warmup,
                                    warmup_t=warmup, warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)
    mixer = Mixup(mixup_alpha=0.2, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=10)
    criterion = SoftTargetCrossEntropy()
    plain_scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None
    plain_updates = 0

    def plain_step(images, targets):
        nonlocal plain_updates
        images, soft = mixer(images, targets)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = criterion(plain_model(images), soft)
        if plain_scaler is not None:
            plain_scaler.scale(loss).backward()
            plain_scaler.step(plain_opt)
            plain_scaler.update()
        else:
            loss.backward()
            plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)
        plain_updates += 1
        plain_sched.step_update(plain_updates)
        return loss.detach()

    ours_model.train()
    plain_model.train()
    generator = torch.Generator().manual_seed(1)
    cpu_clock = device.type == "cpu" and args.threads == 1
    clock = time.thread_time if cpu_clock else time.perf_counter
    times = {"timm_ext": [], "plain timm": []}
    sides = [("timm_ext", ours), ("plain timm", plain_step)]
    for round_ in range(steps):
        images = torch.randn(args.batch_size, args.in_chans, args.img_size, args.img_size, generator=generator)
        targets = torch.randint(0, 10, (args.batch_size,), generator=generator)
        images, targets = images.to(device), targets.to(device)
        for name, step in sides if round_ % 2 == 0 else sides[::-1]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = clock()
            step(images.clone(), targets)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_ >= args.warmup:
                times[name].append(clock() - start)

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = [a / b for a, b in zip(times["timm_ext"], times["plain timm"], strict=True)]
    where = f"{device.type}, {args.threads} thread(s)" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"{args.model}, batch {args.batch_size} x {args.in_chans} x {args.img_size}^2, {args.steps} rounds after "
          f"{args.warmup} warmup, {where}, {'thread CPU time' if cpu_clock else 'wall time'}, amp={args.amp}")
    for name, value in medians.items():
        print(f"  {name:<11} median step {value * 1e3:8.2f} ms")
    print(f"  ratio timm_ext / plain timm: {medians['timm_ext'] / medians['plain timm']:.3f} (medians), "
          f"{statistics.median(ratios):.3f} (median of per-round ratios); target <= 1.03")


if __name__ == "__main__":
    main()
