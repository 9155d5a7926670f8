"""A short real run on a Fashion-MNIST subset: it learns, writes every output, validates, and distils."""

import copy
import csv

import pytest
import timm
import torch
import yaml

from plugins.models.features import TimmFeatures
from plugins.recipe import Recipe
from plugins.runtime.checkpoint import BACKBONE_FORMAT, load_checkpoint
from plugins.tricks.distillation import distillation_loss
from plugins.tricks.mixup import mixup
from timm_ext import train as train_cmd
from timm_ext import validate as validate_cmd
from timm_ext._engine import TrainStep, _stream_seed, load_teacher
from timm_ext.scheduler import create_tricks_scheduler

pytestmark = pytest.mark.slow

TRAIN_IMAGES, VAL_IMAGES, BATCH, EPOCHS = 2048, 512, 64, 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fashion_mnist):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train")
    export = root / "exported" / "backbone-copy.pth"
    result = train_cmd.run([
        "--model", "tricks_resnet26nd", "--recipe", "paper", "--epochs", str(EPOCHS), "--warmup-epochs", "0.5",
        "--mixup", "0", "-b", str(BATCH), "--train-subset", str(TRAIN_IMAGES), "--val-subset", str(VAL_IMAGES),
        "--no-amp", "--seed", "0", "--no-progress", "--checkpoint-interval", "10", "--output", str(root / "run"),
        "--export-backbone", str(export),
    ])
    return result, export


def test_run_learns_well_above_chance(trained):
    result, _ = trained
    top1 = [row["val_top1"] for row in result.history]
    assert len(top1) == EPOCHS
    assert top1[-1] > 40.0, f"val top-1 {top1} (chance is 10%)"
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_every_output_file_is_written(trained):
    result, export = trained
    out = result.output
    for name in ("args.yaml", "recipe.yaml", "summary.csv", "lr_per_step.csv", "lr_curve.png", "last.pth",
                 "best.pth", "backbone.pth"):
        assert (out / name).is_file(), name
    assert Recipe.from_yaml(out / "recipe.yaml") == result.recipe
    assert yaml.safe_load((out / "args.yaml").read_text())["model"] == "tricks_resnet26nd"
    assert (out / "lr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "val_top1", "val_top5", "lr", "images_per_s", "epoch_time"]
    assert [float(r["val_top1"]) for r in rows] == [h["val_top1"] for h in result.history]


def test_lr_per_step_is_the_recipe_lr_of_every_update(trained):
    result, _ = trained
    steps_per_epoch = TRAIN_IMAGES // BATCH
    with open(result.output / "lr_per_step.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == EPOCHS * steps_per_epoch
    for row in rows:
        i = int(row["step"])
        expected = result.recipe.lr_at(i, steps_per_epoch)
        assert float(row["lr_group0"]) == float(row["lr_group1"]) == expected, f"update {i}"


def test_checkpoints_are_weights_only_and_complete(trained):
    result, _ = trained
    last = load_checkpoint(result.output / "last.pth")
    assert (last["epoch"], last["step_in_epoch"], last["global_step"]) == (EPOCHS, 0, EPOCHS * TRAIN_IMAGES // BATCH)
    assert set(last) >= {"model", "optimizer", "scheduler", "rng", "args", "recipe", "history", "best_top1"}
    assert Recipe.from_dict(last["recipe"]) == result.recipe
    best = load_checkpoint(result.output / "best.pth")
    assert best["history"][-1]["val_top1"] == max(h["val_top1"] for h in result.history)


def test_backbone_export_format_and_transfer(trained):
    result, export = trained
    backbone = load_checkpoint(result.output / "backbone.pth")
    meta = backbone["meta"]
    assert meta["format"] == BACKBONE_FORMAT
    assert (meta["model_name"], meta["variant"], meta["num_classes"], meta["in_chans"]) == ("tricks_resnet26nd", "d", 10, 1)
    assert meta["val_top1"] == result.history[-1]["val_top1"] and meta["recipe"] == result.recipe.to_dict()
    assert not any(k.startswith("fc.") for k in backbone["state_dict"])
    copy_ = load_checkpoint(export)
    assert copy_["meta"] == meta and all(torch.equal(copy_["state_dict"][k], v) for k, v in backbone["state_dict"].items())
    features = TimmFeatures("tricks_resnet26nd", checkpoint=str(result.output / "backbone.pth"), in_chans=1)
    assert features.load_report.ok


def test_validate_reproduces_the_best_epoch(trained):
    result, _ = trained
    args = validate_cmd.build_parser().parse_args(
        ["--checkpoint", str(result.output / "best.pth"), "-b", str(BATCH), "--val-subset", str(VAL_IMAGES)])
    report = validate_cmd.validate(args)
    assert report["images"] == VAL_IMAGES
    assert report["top1"] == max(h["val_top1"] for h in result.history)


def test_distillation_run_with_a_teacher_checkpoint(trained, tmp_path):
    result, _ = trained
    student = train_cmd.run([
        "--model", "tricks_resnet26nb", "--recipe", "paper", "--epochs", "1", "--warmup-epochs", "0.5", "-b", "32",
        "--train-subset", "256", "--val-subset", "64", "--kd-teacher", str(result.output / "best.pth"),
        "--kd-temperature", "20", "--no-amp", "--no-progress", "--output", str(tmp_path),
    ])
    assert student.recipe.distill_teacher == str(result.output / "best.pth")
    assert student.recipe.mixup_alpha == 0.2  # the paper recipe: the teacher sees the mixed images
    assert all(torch.isfinite(torch.tensor(student.step_losses)))
    assert (tmp_path / "backbone.pth").is_file()


def test_teacher_gets_no_gradient_and_sees_the_mixed_images(trained):
    result, _ = trained
    teacher = load_teacher(str(result.output / "best.pth"), None, 10, 1, torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    teacher_before = copy.deepcopy(teacher.state_dict())
    recipe = result.recipe.with_overrides(mixup_alpha=0.2, distill_teacher="teacher", distill_temperature=20.0)
    torch.manual_seed(0)
    student = timm.create_model("tricks_resnet26nb", num_classes=10, in_chans=1)
    student_before = copy.deepcopy(student)
    optimizer = torch.optim.SGD(student.parameters(), lr=recipe.scaled_lr(), momentum=0.9)
    step = TrainStep(student, optimizer, create_tricks_scheduler(optimizer, recipe, 10), recipe, 10,
                     teacher=teacher, seed=3)
    images, targets = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss = step(images, targets)
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, teacher_before[key], rtol=0, atol=0, msg=f"teacher {key} changed")
    mixed, soft, _ = mixup(images, targets, 10, 0.2, torch.Generator().manual_seed(_stream_seed(3, 0, 1)),
                           label_smoothing=0.1 * 10 / 9)  # paper-form smoothing through mixup's uniform form
    student_before.train()
    with torch.no_grad():
        expected = distillation_loss(student_before(mixed), teacher(mixed), soft, temperature=20.0)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6, msg="loss of the first update")
    assert step.num_updates == 1



def test_amp_channels_last_and_accumulation(tmp_path, fashion_mnist):
    common = ["--model", "tricks_resnet26nd", "--recipe", "paper", "--epochs", "1", "--warmup-epochs", "0.5",
              "--train-subset", "128", "--val-subset", "32", "--no-progress"]
    accumulated = train_cmd.run([*common, "-b", "16", "--grad-accum-steps", "2", "--amp", "--channels-last",
                                 "--output", str(tmp_path / "accum")])
    single = train_cmd.run([*common, "-b", "32", "--output", str(tmp_path / "single")])
    assert accumulated.recipe.batch_size == single.recipe.batch_size == 32  # global batch: 16 x 2 micro-batches
    assert accumulated.lrs == single.lrs and len(single.lrs) == 4
    assert all(torch.isfinite(torch.tensor(accumulated.step_losses)))


def test_image_folder_dataset(tmp_path):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 12), ("val", 4)):
        for label, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            folder = tmp_path / "data" / split / f"class{label}"
            folder.mkdir(parents=True)
            for k in range(count):
                noise = torch.randint(0, 40, (20, 20, 3), generator=generator, dtype=torch.uint8)
                pixels = (torch.tensor(colour, dtype=torch.uint8) + noise).numpy()
                Image.fromarray(pixels).save(folder / f"{k}.png")
    result = train_cmd.run(["--data-dir", str(tmp_path / "data"), "--model", "tricks_resnet18d", "--img-size", "32",
                            "-b", "8", "--epochs", "1", "--decay-milestones", "1", "--workers", "0", "--no-progress",
                            "--output", str(tmp_path / "out")])
    assert result.args.dataset == "imagefolder" and result.args.num_classes == 2 and result.args.in_chans == 3
    assert len(result.lrs) == 24 // 8 and result.history[0]["val_top1"] >= 0
