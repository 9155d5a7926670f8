"""One recipe through tricks-train (timm's loop with the paper's parts plugged in) and through a plain loop of
timm's own parts: same lrs, same losses, same weights.

The plain loop uses timm's native pieces: ``resnet26d`` with timm's ``zero_init_last`` (zero gamma),
``create_optimizer_v2(..., "sgd")`` (Nesterov SGD; ``filter_bias_and_bn`` = ``param_groups_weight_decay``, no
bias decay), ``CosineLRScheduler`` (warmup_prefix, warmup_lr_init=0, per-update ``t_in_epochs=False``),
``LabelSmoothingCrossEntropy`` (the uniform form) or ``Mixup`` + ``SoftTargetCrossEntropy``, and timm
train.py's linear scaling ``lr = lr_base * global_batch / lr_base_size``.

Where the conventions differ, the comparison maps them:
- timm's loop calls ``step_update(k)`` after k updates, so its update i runs at ``_get_lr(i - 1)`` and the first
  update at ``warmup_lr_init``; the paper's update i is ``i / m`` of the lr, which is timm's ``_get_lr(i)``.
  The plain loop therefore calls ``step_update(i)`` before update i.
- timm's ``Mixup`` draws lambda from NumPy's global generator, which tricks-train seeds per batch
  (``timm_ext._timm_loop.batch_seed``); the plain loop seeds it the same way.
"""

import csv

import numpy as np
import pytest
import timm
import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from plugins.data.fashion_mnist import FashionMNIST
from timm_ext import train as train_cmd
from timm_ext._timm_loop import batch_seed
from timm_ext._timm_setup import load_train_checkpoint

pytestmark = pytest.mark.slow

SEED, BATCH, IMAGES, EPOCHS, WARMUP_EPOCHS = 5, 16, 128, 2, 1
LR_BASE, LR_BASE_SIZE, MIN_LR, EPS, WD = 0.4, 256, 1e-3, 0.1, 1e-4
COMPARED_LOSSES = 3


def _plain_timm_loop(mixup_alpha: float, steps: int):
    images, labels = FashionMNIST("train", img_size=32, indices=range(IMAGES)).tensors()
    torch.manual_seed(SEED)
    model = timm.create_model("resnet26d", pretrained=False, num_classes=10, in_chans=1)  # zero_init_last=True
    lr = LR_BASE * BATCH / LR_BASE_SIZE
    optimizer = create_optimizer_v2(model, "sgd", lr=lr, weight_decay=WD, momentum=0.9)
    steps_per_epoch = IMAGES // BATCH
    warmup = WARMUP_EPOCHS * steps_per_epoch
    scheduler = CosineLRScheduler(optimizer, t_initial=steps - warmup, lr_min=MIN_LR, warmup_t=warmup,
                                  warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)
    if mixup_alpha:
        mixer = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=0.0, prob=1.0, mode="batch", label_smoothing=EPS,
                      num_classes=10)
        criterion = SoftTargetCrossEntropy()
    else:
        criterion = LabelSmoothingCrossEntropy(smoothing=EPS)
    model.train()
    lrs, losses, update = [], [], 0
    for epoch in range(EPOCHS):
        order = torch.randperm(IMAGES, generator=torch.Generator().manual_seed(SEED + epoch))
        for b in range(steps_per_epoch):
            index = order[b * BATCH:(b + 1) * BATCH]
            x, y = images[index], labels[index]
            update += 1
            scheduler.step_update(update)  # timm's t = update: the paper's lr of this update
            if mixup_alpha:
                np.random.seed(batch_seed(SEED, 0, epoch, b))
                x, y = mixer(x.clone(), y)
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            lrs.append({g["weight_decay"]: g["lr"] for g in optimizer.param_groups})
            losses.append(loss.item())
    return lrs, losses, model


@pytest.mark.parametrize("mixup_alpha", [0.0, 0.2], ids=["smoothing", "mixup"])
def test_same_lrs_losses_and_weights_as_a_plain_timm_loop(mixup_alpha, tmp_path, fashion_mnist):
    assert train_cmd.main([
        "--dataset", "fashion_mnist", "--model", "resnet26d", "--recipe", "paper", "--img-size", "32", "--in-chans",
        "1", "-b", str(BATCH), "--train-subset", str(IMAGES), "--val-subset", "16", "--epochs", str(EPOCHS),
        "--warmup-epochs", str(WARMUP_EPOCHS), "--lr-base", str(LR_BASE), "--lr-base-size", str(LR_BASE_SIZE),
        "--min-lr-ratio", str(MIN_LR / (LR_BASE * BATCH / LR_BASE_SIZE)), "--weight-decay", str(WD),
        "--smoothing", str(EPS), "--smoothing-form", "uniform", "--mixup", str(mixup_alpha), "--no-amp",
        "--hflip", "0", "--scale", "1", "1", "--ratio", "1", "1", "--color-jitter", "0", "--seed", str(SEED),
        "--output", str(tmp_path), "--experiment", "run",
    ]) == 0
    out = tmp_path / "run"
    with open(out / "lr_per_step.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = len(rows)
    assert steps == EPOCHS * IMAGES // BATCH
    plain_lrs, plain_losses, plain_model = _plain_timm_loop(mixup_alpha, steps)
    groups = [g["weight_decay"] for g in load_train_checkpoint(str(out / "last.pth.tar"), "--resume")["optimizer"]
              ["param_groups"]]
    for i, (row, theirs) in enumerate(zip(rows, plain_lrs, strict=True), start=1):
        for k, decay in enumerate(groups):
            torch.testing.assert_close(float(row[f"lr_group{k}"]), theirs[decay], rtol=1e-12, atol=1e-15,
                                       msg=f"lr of update {i}, weight_decay={decay}")
    with open(out / "summary.csv", newline="") as f:
        summary = [float(r["train_loss"]) for r in csv.DictReader(f)]
    per_epoch = torch.tensor(plain_losses).view(EPOCHS, -1).mean(dim=1).tolist()
    torch.testing.assert_close(summary, per_epoch, rtol=1e-4, atol=1e-5, msg=f"epoch losses, mixup {mixup_alpha}")
    ours = load_train_checkpoint(str(out / "last.pth.tar"), "--resume")["state_dict"]
    for key, value in plain_model.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=1e-3, atol=1e-5, msg=f"{key}, mixup {mixup_alpha}")
