"""Short real runs of tricks-train on timm's loop, called as users call it (``main(argv)``): a Fashion-MNIST
recipe run learns and writes timm's files, its lr is the recipe's closed form, it validates, exports a backbone
and teaches a student (the paper's distillation on timm's task API); the paper's smoothing under timm's mixup."""

import csv
import os

import pytest
import timm
import torch
import yaml
from timm.data import Mixup

from plugins.models.features import TimmFeatures
from plugins.recipe import Recipe
from plugins.runtime.checkpoint import BACKBONE_FORMAT, load_checkpoint
from plugins.tricks.distillation import distillation_loss
from plugins.tricks.label_smoothing import uniform_epsilon
from timm_ext import train as train_cmd
from timm_ext import validate as validate_cmd
from timm_ext._timm_setup import PaperDistillationTask, load_teacher, load_train_checkpoint, mixup_smoothing

pytestmark = pytest.mark.slow

TRAIN_IMAGES, VAL_IMAGES, BATCH, EPOCHS = 2048, 512, 64, 2
FLIPS_ONLY = ["--scale", "1", "1", "--ratio", "1", "1", "--color-jitter", "0"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fashion_mnist):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train")
    export = root / "exported" / "backbone-copy.pth"
    code = train_cmd.main([
        "--dataset", "fashion_mnist", "--model", "tricks_resnet26nd", "--recipe", "paper", "--epochs", str(EPOCHS),
        "--warmup-epochs", "0.5", "--mixup", "0", "-b", str(BATCH), "--train-subset", str(TRAIN_IMAGES),
        "--val-subset", str(VAL_IMAGES), "--no-amp", "--seed", "0", *FLIPS_ONLY, "--recovery-interval", "10",
        "--output", str(root), "--experiment", "run", "--export-backbone", str(export),
    ])
    assert code == 0
    return root / "run", export


def test_run_learns_well_above_chance(trained):
    out, _ = trained
    rows = _rows(out / "summary.csv")
    top1 = [float(r["eval_top1"]) for r in rows]
    assert len(top1) == EPOCHS
    assert top1[-1] > 40.0, f"val top-1 {top1} (chance is 10%)"
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_timms_files_and_ours_are_written(trained):
    out, export = trained
    for name in ("args.yaml", "recipe.yaml", "summary.csv", "lr_per_step.csv", "lr_curve.png", "last.pth.tar",
                 "model_best.pth.tar", "checkpoint-1.pth.tar"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.glob("recovery-*.pth.tar")) == ["recovery-1-19.pth.tar", "recovery-1-29.pth.tar"]
    recipe = Recipe.from_yaml(out / "recipe.yaml")
    assert (recipe.name, recipe.epochs, recipe.warmup_epochs, recipe.batch_size, recipe.mixup_alpha) == (
        "paper", EPOCHS, 0.5, BATCH, 0.0)
    args = yaml.safe_load((out / "args.yaml").read_text())
    assert (args["model"], args["recipe"], args["sched"], args["smoothing_form"]) == (
        "tricks_resnet26nd", "paper", "tricks_cosine", "paper")
    assert (out / "lr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(out / "summary.csv")
    # timm's columns (timm.utils.update_summary), then ours
    assert list(rows[0]) == ["epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "lr", "images_per_s",
                             "epoch_time", "epoch_cpu_time"]
    assert [r["epoch"] for r in rows] == ["0", "1"] and float(rows[0]["images_per_s"]) > 0


def test_lr_per_step_is_the_recipe_lr_of_every_update_in_both_groups(trained):
    out, _ = trained
    recipe = Recipe.from_yaml(out / "recipe.yaml")
    steps_per_epoch = TRAIN_IMAGES // BATCH
    rows = _rows(out / "lr_per_step.csv")
    assert len(rows) == EPOCHS * steps_per_epoch
    for row in rows:
        i = int(row["step"])
        expected = recipe.lr_at(i, steps_per_epoch)
        assert float(row["lr_group0"]) == float(row["lr_group1"]) == expected, f"update {i}"


def test_checkpoints_are_timms_read_weights_only_with_the_position(trained):
    out, _ = trained
    last = load_train_checkpoint(str(out / "last.pth.tar"), "--resume")
    assert set(last) >= {"epoch", "arch", "state_dict", "optimizer", "args", "metric", "tricks_position"}
    assert (last["epoch"], last["arch"], last["args"].model) == (EPOCHS - 1, "tricks_resnet26nd", "tricks_resnet26nd")
    position = last["tricks_position"]
    assert (position["epoch"], position["next_batch"], position["updates_per_epoch"]) == (EPOCHS, 0, 32)
    assert set(position["rng"]) >= {"torch", "numpy", "python"}
    recovery = load_train_checkpoint(str(out / "recovery-1-29.pth.tar"), "--resume")["tricks_position"]
    assert (recovery["epoch"], recovery["next_batch"]) == (1, 30)


def test_backbone_export_format_and_transfer(trained):
    out, export = trained
    backbone = load_checkpoint(export)
    meta = backbone["meta"]
    assert meta["format"] == BACKBONE_FORMAT
    assert (meta["model_name"], meta["variant"], meta["num_classes"], meta["in_chans"]) == ("tricks_resnet26nd", "d", 10, 1)
    assert meta["val_top1"] == float(_rows(out / "summary.csv")[-1]["eval_top1"])
    assert meta["recipe"] == Recipe.from_yaml(out / "recipe.yaml").to_dict()
    assert not any(k.startswith("fc.") for k in backbone["state_dict"])
    features = TimmFeatures("tricks_resnet26nd", checkpoint=str(export), in_chans=1)
    assert features.load_report.ok


def test_validate_reproduces_the_best_epoch(trained):
    out, _ = trained
    args = validate_cmd.build_parser().parse_args(["--checkpoint", str(out / "model_best.pth.tar"), "-b", str(BATCH)])
    report = validate_cmd.validate(args)
    assert report["images"] == VAL_IMAGES and report["model"] == "tricks_resnet26nd"
    assert report["top1"] == pytest.approx(max(float(r["eval_top1"]) for r in _rows(out / "summary.csv")), abs=1e-9)


def test_kd_teacher_without_a_recipe_and_with_the_paper_recipe(trained, tmp_path):
    out, _ = trained
    teacher = str(out / "model_best.pth.tar")
    common = ["--dataset", "fashion_mnist", "--epochs", "1", "-b", "32", "--train-subset", "256", "--val-subset",
              "64", *FLIPS_ONLY, "--kd-teacher", teacher, "--kd-temperature", "20", "--output", str(tmp_path)]
    assert train_cmd.main([*common, "--model", "tricks_resnet26nb", "--experiment", "timm", "--sched", "cosine",
                           "--warmup-epochs", "0"]) == 0
    assert train_cmd.main([*common, "--model", "tricks_resnet26nb", "--recipe", "paper", "--warmup-epochs", "0.5",
                           "--no-amp", "--experiment", "paper"]) == 0
    for name in ("timm", "paper"):
        rows = _rows(tmp_path / name / "summary.csv")
        assert torch.isfinite(torch.tensor(float(rows[0]["train_loss"]))), name
    args = yaml.safe_load((tmp_path / "paper" / "args.yaml").read_text())
    assert (args["kd_teacher"], args["mixup"], args["smoothing_form"]) == (teacher, 0.2, "paper")


def test_teacher_of_other_classes_and_resume_of_another_model_exit_2(trained, tmp_path, capsys):
    out, _ = trained
    common = ["--dataset", "fashion_mnist", "--epochs", "1", "-b", "32", "--train-subset", "64", "--val-subset", "32",
              *FLIPS_ONLY, "--output", str(tmp_path), "--experiment", "x"]
    assert train_cmd.main([*common, "--num-classes", "5", "--kd-teacher", str(out / "model_best.pth.tar")]) == 2
    assert "--kd-teacher" in (err := capsys.readouterr().err) and "has 10 classes, this run 5" in err
    assert train_cmd.main([*common, "--model", "tricks_resnet50nd", "--resume", str(out / "last.pth.tar")]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--model tricks_resnet26nd, this run trains --model tricks_resnet50nd" in err
    assert not any((tmp_path / "x").glob("*.pth.tar"))


def test_paper_distillation_task_is_the_papers_loss_on_the_mixed_images(trained):
    out, _ = trained
    torch.manual_seed(0)
    student = timm.create_model("tricks_resnet26nb", num_classes=10, in_chans=1)
    teacher = load_teacher(str(out / "model_best.pth.tar"), None, student, torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    task = PaperDistillationTask(student_model=student, teacher_model=teacher, temperature=20.0, epsilon=0.1,
                                 form="paper", device=torch.device("cpu"), verbose=False)
    images, targets = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    mixer = Mixup(mixup_alpha=0.2, label_smoothing=uniform_epsilon(0.1, 10, "paper"), num_classes=10)
    mixed, soft = mixer(images.clone(), targets)
    task.train()
    loss = task(mixed, soft)["loss"]
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    with torch.no_grad():
        expected = distillation_loss(student(mixed), teacher(mixed), soft, temperature=20.0)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    hard = task(images, targets)["loss"]  # class indices: smoothed in the paper's form inside the loss
    with torch.no_grad():
        expected = distillation_loss(student(images), teacher(images), targets, 20.0, 0.1, "paper")
    torch.testing.assert_close(hard.detach(), expected, rtol=1e-5, atol=1e-6)


def test_paper_smoothing_under_timms_mixup_is_the_papers_target():
    args = type("Args", (), {"smoothing": 0.1, "smoothing_form": "paper", "num_classes": 10})()
    mixer = Mixup(mixup_alpha=1.0, label_smoothing=mixup_smoothing(args), num_classes=10)
    targets = torch.tensor([3, 7])
    _, soft = mixer(torch.zeros(2, 1, 4, 4), targets)
    lam = float(soft[0, 3] - soft[0, 7]) / (0.9 - 0.1 / 9) * 0.5 + 0.5  # solve for the drawn lambda
    paper = torch.full((2, 10), 0.1 / 9)
    paper[0, 3] = paper[1, 7] = 0.9
    expected = lam * paper + (1 - lam) * paper.flip(0)
    torch.testing.assert_close(soft, expected, rtol=0, atol=1e-6)
    args.smoothing_form = "uniform"
    assert mixup_smoothing(args) == 0.1


def test_amp_channels_last_and_accumulation_give_the_same_lrs(tmp_path, fashion_mnist):
    common = ["--dataset", "fashion_mnist", "--model", "tricks_resnet26nd", "--recipe", "paper", "--epochs", "1",
              "--warmup-epochs", "0.5", "--train-subset", "128", "--val-subset", "32", *FLIPS_ONLY,
              "--output", str(tmp_path)]
    assert train_cmd.main([*common, "-b", "16", "--grad-accum-steps", "2", "--amp", "--channels-last",
                           "--experiment", "accum"]) == 0
    assert train_cmd.main([*common, "-b", "32", "--no-amp", "--experiment", "single"]) == 0
    accum, single = (_rows(tmp_path / n / "lr_per_step.csv") for n in ("accum", "single"))
    assert accum == single and len(single) == 4  # global batch 16 x 2 micro-batches = 32
    assert torch.isfinite(torch.tensor(float(_rows(tmp_path / "accum" / "summary.csv")[0]["train_loss"])))
    assert yaml.safe_load((tmp_path / "accum" / "args.yaml").read_text())["amp_dtype"] == (
        "float16" if torch.cuda.is_available() else "bfloat16")


def _image_folder(root):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 12), ("validation", 4)):
        for label, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for k in range(count):
                noise = torch.randint(0, 40, (20, 20, 3), generator=generator, dtype=torch.uint8)
                Image.fromarray((torch.tensor(colour, dtype=torch.uint8) + noise).numpy()).save(folder / f"{k}.png")
    return root


def test_paper_recipe_with_timms_augmentation_ema_cutmix_and_drop_path(tmp_path):
    """The issue's command: every timm flag combines with --recipe; the lr is still the closed form."""
    data = _image_folder(tmp_path / "data")
    assert train_cmd.main([str(data), "--model", "tricks_resnet18d", "--recipe", "paper", "--aa", "rand-m9-mstd0.5",
                           "--model-ema", "--cutmix", "1.0", "--drop-path", "0.05", "--epochs", "2", "-b", "8",
                           "--img-size", "32", "--num-classes", "2", "--workers", "0", "--no-amp",
                           "--output", str(tmp_path / "out"), "--experiment", "e"]) == 0
    out = tmp_path / "out" / "e"
    recipe = Recipe.from_yaml(out / "recipe.yaml")
    assert recipe.warmup_epochs == 2  # the paper's 5 warmup epochs, cut to the 2-epoch run (and said)
    rows = _rows(out / "lr_per_step.csv")
    assert len(rows) == 2 * (24 // 8)
    for row in rows:
        expected = recipe.lr_at(int(row["step"]), 24 // 8)
        assert float(row["lr_group0"]) == float(row["lr_group1"]) == expected
    ckpt = load_train_checkpoint(str(out / "last.pth.tar"), "--resume")
    assert "state_dict_ema" in ckpt and ckpt["args"].aa == "rand-m9-mstd0.5"
    assert os.path.isfile(out / "model_best.pth.tar")


def test_paper_smoothing_under_mixup_without_a_recipe_on_the_papers_schedule(tmp_path, fashion_mnist):
    """No --recipe: timm's flags alone choose the paper's smoothing under mixup and the paper's per-update lr."""
    assert train_cmd.main(["--dataset", "fashion_mnist", "--model", "tricks_resnet26nd", "--smoothing", "0.1",
                           "--smoothing-form", "paper", "--mixup", "0.2", "--sched", "tricks_cosine", "--epochs", "2",
                           "--warmup-epochs", "0.5", "-b", "32", "--train-subset", "128", "--val-subset", "32",
                           *FLIPS_ONLY, "--output", str(tmp_path), "--experiment", "run"]) == 0
    out = tmp_path / "run"
    recipe = Recipe.from_yaml(out / "recipe.yaml")  # Recipe() laid under timm's flags: what the schedule ran
    assert (recipe.label_smoothing, recipe.label_smoothing_form, recipe.mixup_alpha) == (0.1, "paper", 0.2)
    assert (recipe.schedule, recipe.warmup_epochs, recipe.batch_size, recipe.weight_decay) == ("cosine", 0.5, 32, 2e-5)
    rows = _rows(out / "lr_per_step.csv")
    assert len(rows) == 2 * 4
    for row in rows:  # timm's --lr-base 0.1 at 256, scaled to the batch of 32: the closed form to the last bit
        assert float(row["lr_group0"]) == float(row["lr_group1"]) == recipe.lr_at(int(row["step"]), 4)
    assert yaml.safe_load((out / "args.yaml").read_text())["recipe"] is None


def test_resumable_order_starts_mid_epoch_and_keeps_the_epochs_length():
    from torch.utils.data import BatchSampler

    from timm_ext._timm_data import ResumableSampler

    sampler = ResumableSampler(20, batch_size=4, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    assert sorted(k - 2 * 20 for k in full) == list(range(20))  # every item once, keyed by the epoch
    sampler.start_batch = 2
    batches = BatchSampler(sampler, 4, drop_last=True)
    assert len(batches) == 5, "the epoch's length, so that timm's loop finds the last batch of a resumed epoch"
    assert [k for b in batches for k in b] == full[8:]  # the uninterrupted order from batch 2 on
    assert list(sampler) == full  # a start is used once
