"""Bad input, one table: every case gives one clear message and exit status 2, and damages nothing.

``CASES`` is the table (``Case(id, input, expected, runner)``): the command-line tools run in this process
through their ``main(argv)`` (fast; stderr captured), a few in a subprocess to prove the real exit status
and the absence of a traceback. For every case: the status is 2, exactly one line of stderr is the tool's
error line and it matches ``expected``, and no traceback is printed. Cases that run in an existing output
folder (``folder``) also assert that every file there before the command is byte-identical afterwards (sha256).
``docs/reliability.md`` is generated from this table (``python tests/reliability/make_reliability_doc.py``)
and :func:`test_reliability_doc_is_current` fails when it drifts.

This module imports nothing relative to it, so that the doc generator can import it as a plain module.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOC = ROOT / "docs" / "reliability.md"

# tool -> (``python -m`` module, module and function of its main(argv), the prefix of its one error line)
TOOLS = {
    "tricks-train": ("timm_ext.train", "timm_ext.train:main", "tricks-train: error: "),
    "tricks-validate": ("timm_ext.validate", "timm_ext.validate:main", "tricks-validate: error: "),
    "mm_ext.train": ("mm_ext.train", "mm_ext.train:main", "mm_ext.train: error: "),
    "d2_ext.train_net": ("d2_ext.train_net", "d2_ext.train_net:cli", "python -m d2_ext.train_net: error: "),
    "plugins.reproduce": ("plugins.reproduce", "plugins.reproduce.cli:main", "error: "),
    "plugins.data.scenes": ("plugins.data.scenes", "plugins.data.scenes:main", "python -m plugins.data.scenes: error: "),
}
FRAMEWORK = {"tricks-train": "timm", "tricks-validate": "timm", "mm_ext.train": "mmdet",
             "d2_ext.train_net": "detectron2"}

TIMM_RUN = ["--dataset", "fashion_mnist", "--model", "tricks_resnet26nd", "--recipe", "paper", "--no-amp", "--epochs",
            "2", "--warmup-epochs", "0.5", "-b", "16", "--train-subset", "64", "--val-subset", "16", "--seed", "0",
            "--scale", "1", "1", "--ratio", "1", "1", "--color-jitter", "0", "--no-progress"]
MM_DET = "mm_ext/configs/faster-rcnn_timm-r26nd_fpn_tricks_fashion-scenes.py"
MM_SEG = "mm_ext/configs/fcn_timm-r26nd-d8_tricks_fashion-scenes.py"
D2_YAML = "d2_ext/configs/faster_rcnn_timm_R_26n_D_FPN_tricks_fashion_scenes.yaml"


class Ctx:
    """What a case needs: a fresh folder, the session's data and runs, and helpers that write bad files there."""

    def __init__(self, tmp_path: Path, monkeypatch, request):
        self.tmp, self.monkeypatch, self._request = tmp_path, monkeypatch, request
        self.marker = tmp_path / "PAYLOAD_RAN"

    def fixture(self, name: str):
        return self._request.getfixturevalue(name)

    def run_folder(self) -> Path:
        """A copy of a finished tricks-train run (``TIMM_RUN``, 2 epochs of 4 updates) in this case's folder."""
        folder = self.tmp / "run"
        if not folder.exists():
            shutil.copytree(self.fixture("timm_run"), folder)
        return folder

    def empty_dir(self) -> Path:
        (self.tmp / "empty").mkdir(exist_ok=True)
        return self.tmp / "empty"

    def under_file(self) -> Path:
        """A path below a regular file: no process can create it, root included."""
        (self.tmp / "a_file").write_text("")
        return self.tmp / "a_file" / "out"

    def truncated(self, path: Path) -> Path:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path

    def payload(self) -> Path:
        """A torch file whose unpickling would call ``open(marker, "w")`` (it must be refused, not run)."""
        path = self.tmp / "payload.pth"
        torch.save({"model": _Payload(str(self.marker))}, path)
        return path

    def backbone(self, edit: Callable[[dict], None] | None = None) -> Path:
        """The session's tricks_resnet26nd ``backbone.pth``, optionally with ``edit`` applied to its state_dict."""
        source = self.fixture("backbone")
        if edit is None:
            return source
        data = torch.load(source, weights_only=True)
        edit(data["state_dict"])
        path = self.tmp / "edited_backbone.pth"
        torch.save(data, path)
        return path

    def mm(self, config: str, work_dir: Path, *options: str, flags: tuple[str, ...] = ()) -> list[str]:
        scenes = self.fixture("scenes")
        self.monkeypatch.setenv("FASHION_SCENES_ROOT", f"{scenes}/")
        return [str(ROOT / config), "--work-dir", str(work_dir), *flags, "--cfg-options",
                f"model.backbone.checkpoint={self.backbone()}", "train_cfg.max_iters=3", "train_cfg.val_interval=100",
                "train_dataloader.batch_size=2", "train_dataloader.num_workers=0",
                "train_dataloader.persistent_workers=False", "val_dataloader.num_workers=0",
                "val_dataloader.persistent_workers=False", "default_hooks.checkpoint.interval=1",
                "param_scheduler.0.warmup_steps=1", "randomness.seed=0", *options]

    def d2(self, output: Path, *opts: str, yaml: str | None = None) -> list[str]:
        return ["--config-file", yaml or str(ROOT / D2_YAML), "--scenes-root", str(self.fixture("scenes")),
                "MODEL.DEVICE", "cpu", "TRICKS.TIMM.CHECKPOINT", str(self.backbone()), "INPUT.MIN_SIZE_TRAIN", "(64,)",
                "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
                "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3",
                "TRICKS.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "0", "SEED", "0",
                "DATASETS.TEST", "()", "OUTPUT_DIR", str(output), *opts]

    def yaml(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path


class _Payload:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@dataclass(frozen=True)
class Outcome:
    status: int | None
    stderr: str


@dataclass(frozen=True)
class Command:
    """Runs ``tool`` with ``argv(ctx)``, in this process (default) or in a subprocess."""

    tool: str
    argv: Callable[[Ctx], list[str]]
    env: Callable[[Ctx], dict[str, str]] = field(default=lambda ctx: {})
    subprocess: bool = False

    def __call__(self, ctx: Ctx) -> Outcome:
        argv, env = self.argv(ctx), self.env(ctx)
        module, entry, _ = TOOLS[self.tool]
        entry_module, entry_function = entry.split(":")
        if self.subprocess:
            full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env}
            proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=ctx.tmp, env=full_env,
                                  capture_output=True, text=True, timeout=240)
            return Outcome(proc.returncode, proc.stderr)
        for key, value in env.items():
            ctx.monkeypatch.setenv(key, value)
        function = getattr(importlib.import_module(entry_module), entry_function)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = function(argv)
            except SystemExit as stop:
                status = stop.code
        return Outcome(status, stderr.getvalue())


@dataclass(frozen=True)
class Case:
    """One bad input: ``id`` (the test id), ``input`` (what is wrong, for the doc), ``expected`` (regex of the one
    error line, after the tool's prefix), ``runner``; ``folder(ctx)`` prepares an existing output folder that
    must be left byte-identical; ``check(ctx)`` asserts anything else (e.g. that a payload did not run)."""

    id: str
    input: str
    expected: str
    runner: Command
    folder: Callable[[Ctx], Path] | None = None
    check: Callable[[Ctx], None] | None = None


def _payload_did_not_run(ctx: Ctx) -> None:
    assert not ctx.marker.exists(), "the pickle's payload ran"


def _mm_kept_iteration_1(ctx: Ctx) -> None:
    work_dir = ctx.tmp / "work"
    assert (work_dir / "last_checkpoint").read_text().strip().endswith("iter_1.pth")
    assert not (work_dir / "iter_2.pth").exists(), "a checkpoint of the non-finite iteration was written"
    state = torch.load(work_dir / "iter_1.pth", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def _d2_kept_iteration_1(ctx: Ctx) -> None:
    output = ctx.tmp / "out"
    assert (output / "last_checkpoint").read_text().strip() == "model_0000000.pth"
    assert not (output / "model_0000001.pth").exists(), "a checkpoint of the non-finite iteration was written"
    state = torch.load(output / "model_0000000.pth", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def _drop_layer4(state: dict) -> None:
    for key in [k for k in state if k.startswith("layer4.")]:
        del state[key]


def _reshape_stem(state: dict) -> None:
    key = next(iter(state))
    state[key] = state[key][:, :1].clone()


def _run_with_truncated_last(ctx: Ctx) -> Path:
    ctx.truncated(ctx.run_folder() / "last.pth.tar")
    return ctx.run_folder()


def _existing_d2_output(ctx: Ctx) -> Path:
    output = ctx.tmp / "out"
    output.mkdir()
    for name, text in (("model_final.pth", "weights of an earlier run"), ("metrics.json", "{}\n"),
                       ("config.yaml", "OUTPUT_DIR: out\n"), ("lr_per_step.csv", "step,lr_group0\n1,0.1\n")):
        (output / name).write_text(text)
    return output


def _existing_mm_work_dir(ctx: Ctx) -> Path:
    work_dir = ctx.tmp / "work"
    work_dir.mkdir()
    shutil.copyfile(ctx.run_folder() / "last.pth.tar", work_dir / "iter_2.pth")
    ctx.truncated(work_dir / "iter_2.pth")
    (work_dir / "last_checkpoint").write_text(str(work_dir / "iter_2.pth"))
    (work_dir / "lr_per_step.csv").write_text("step,lr_group0,lr_group1\n1,0.005,0.005\n2,0.01,0.01\n")
    return work_dir


def _mm_mixup_config(alpha: float) -> str:
    """A config on the shipped fashion-scenes detector that adds DetectionMixupHook and keeps its heads."""
    hooks = "dict(type='LrRecorderHook'), dict(type='RandomStateHook'), dict(type='NonFiniteLossHook')"
    return (f"_base_ = '{ROOT / MM_DET}'\n"
            f"custom_hooks = [{hooks}, dict(type='DetectionMixupHook', alpha={alpha})]\n")


def _train(*argv, **kwargs) -> Command:
    return Command("tricks-train", lambda ctx: [*TIMM_RUN, *(a(ctx) if callable(a) else a for a in argv)], **kwargs)


def _in_run(path: str) -> Callable[[Ctx], str]:
    return lambda ctx: str(ctx.run_folder() / path)


_RUN_OUTPUT = ("--output", lambda ctx: str(ctx.run_folder().parent), "--experiment", "run")

CASES = [
    # ---- timm_ext.train: recipe yaml and flags ----
    Case("timm-recipe-unknown-trick", "recipe yaml with an unknown trick field `label_smoothin: 0.1`",
         r"--recipe \S+: unknown Recipe field\(s\) \['label_smoothin'\]; accepted fields: \[.*'label_smoothing'",
         _train("--recipe", lambda ctx: str(ctx.yaml("r.yaml", "label_smoothin: 0.1\n")), "--output",
                lambda ctx: str(ctx.tmp / "out"))),
    Case("timm-recipe-unknown-variant", "recipe yaml with `variant: e`",
         r"--recipe \S+: Recipe\.variant must be one of \('a', 'b', 'c', 'd'\), got 'e'",
         Command("tricks-train", lambda ctx: ["--recipe", str(ctx.yaml("r.yaml", "variant: e\n")), "--output",
                                              str(ctx.tmp / "out")])),
    Case("timm-recipe-malformed-yaml", "recipe yaml that is not yaml (`label_smoothing: [0.1`)",
         r"--recipe \S+: recipe yaml \S+ is not valid yaml: while parsing a flow sequence",
         Command("tricks-train", lambda ctx: ["--recipe", str(ctx.yaml("r.yaml", "label_smoothing: [0.1\n"))])),
    Case("timm-recipe-eps-negative", "recipe yaml with `label_smoothing: -0.1`",
         r"Recipe\.label_smoothing must be a number in \[0\.0, 1\.0\), got -0\.1",
         Command("tricks-train", lambda ctx: ["--recipe", str(ctx.yaml("r.yaml", "label_smoothing: -0.1\n"))])),
    Case("timm-eps-one", "`--smoothing 1.0` (eps outside [0, 1))", r"argument --smoothing: must be in \[0, 1\), got 1\.0",
         Command("tricks-train", lambda ctx: ["--smoothing", "1.0"])),
    Case("timm-fractional-warmup-on-timms-schedule", "`--sched cosine --warmup-epochs 0.5`",
         r"argument --warmup-epochs: timm's --sched cosine takes whole epochs, got 0\.5 \(a fractional warmup runs "
         r"with --sched tricks_cosine",
         Command("tricks-train", lambda ctx: ["--sched", "cosine", "--warmup-epochs", "0.5"])),
    Case("timm-negative-lr", "`--lr -0.1`", r"argument --lr: must be in \(0, inf\), got -0\.1",
         Command("tricks-train", lambda ctx: ["--lr", "-0.1"])),
    Case("timm-batch-zero", "`-b 0`", r"argument -b/--batch-size: must be in \[1, inf\), got 0",
         Command("tricks-train", lambda ctx: ["-b", "0"])),
    Case("timm-run-naflex", "timm's `--naflex-loader` (a timm feature tricks-train does not run)",
         r"--naflex-loader: the NaFlex loader \(variable-resolution ViTs\) is not wired into tricks-train",
         Command("tricks-train", lambda ctx: ["--dataset", "fashion_mnist", "--naflex-loader"])),
    Case("timm-unknown-sched", "`--recipe paper --sched linear` (no such schedule)",
         r"argument --sched: unknown schedule 'linear'; accepted: timm's cosine, .* tricks_cosine, tricks_step",
         Command("tricks-train", lambda ctx: ["--recipe", "paper", "--sched", "linear"])),
    Case("timm-image-folder-without-images", "`--data-dir` whose class folders hold no image files",
         r"data dir \S+ \(--train-split 'train', --val-split 'validation'\): Found 0 images in subfolders of "
         r"\S+/train\. Supported image extensions are",
         Command("tricks-train", lambda ctx: ["--data-dir", str(_non_image_folder(ctx)), "--output",
                                              str(ctx.tmp / "out")])),
    # ---- timm_ext.train: checkpoints, in an existing run folder ----
    Case("timm-resume-truncated", "`--resume last.pth.tar` cut in half (in the run's folder)",
         r"--resume \S+last\.pth\.tar: cannot read checkpoint \S+: truncated, damaged or not a torch file",
         _train(*_RUN_OUTPUT, "--resume", _in_run("last.pth.tar")), folder=_run_with_truncated_last),
    Case("timm-resume-other-model", "`--resume last.pth.tar` of tricks_resnet26nd with `--model tricks_resnet26nb`",
         r"--resume \S+last\.pth\.tar: a checkpoint of --model tricks_resnet26nd, this run trains --model "
         r"tricks_resnet26nb",
         _train("--model", "tricks_resnet26nb", *_RUN_OUTPUT, "--resume", _in_run("last.pth.tar")),
         folder=Ctx.run_folder),
    Case("timm-resume-other-batch", "`--resume last.pth.tar` with `-b 8` (other positions in the epoch)",
         r"--resume \S+last\.pth\.tar: the checkpoint ran 4 updates per epoch, this command 8",
         _train(*_RUN_OUTPUT, "-b", "8", "--resume", _in_run("last.pth.tar")), folder=Ctx.run_folder),
    Case("timm-resume-pickle-payload", "`--resume` a pickle that would call `open()` when loaded",
         r"--resume \S+: refused to load \S+: it holds objects that weights_only loading does not allow "
         r"\(.*GLOBAL (builtins|io)\.open.*\); nothing in it was run",
         _train(*_RUN_OUTPUT, "--resume", lambda ctx: str(ctx.payload()), subprocess=True),
         folder=Ctx.run_folder, check=_payload_did_not_run),
    Case("timm-kd-teacher-is-a-backbone", "`--kd-teacher backbone.pth` (no classifier)",
         r"--kd-teacher \S+backbone\.pth: a backbone\.pth has no classifier; use model_best\.pth\.tar or "
         r"last\.pth\.tar",
         _train(*_RUN_OUTPUT, "--kd-teacher", _in_run("backbone.pth")), folder=Ctx.run_folder),
    Case("timm-non-finite-loss", "`--resume last.pth.tar --epochs 3 --lr 1e30`: the loss overflows",
         r"non-finite loss \(\S+\) at update (9|10) \(epoch 2, batch \d\): training stopped; \S+last\.pth\.tar keeps "
         r"the last good state",
         _train(*_RUN_OUTPUT, "--resume", _in_run("last.pth.tar"), "--epochs", "3", "--lr", "1e30"),
         folder=Ctx.run_folder),
    # ---- timm_ext.validate ----
    Case("validate-checkpoint-of-another-model", "`--checkpoint last.pth.tar --model tricks_resnet26nb`",
         r"--checkpoint \S+last\.pth\.tar: weights do not fit tricks_resnet26nb",
         Command("tricks-validate", lambda ctx: ["--checkpoint", str(ctx.run_folder() / "last.pth.tar"), "--model",
                                                 "tricks_resnet26nb"]), folder=Ctx.run_folder),
    Case("validate-truncated-checkpoint", "`--checkpoint` cut in half",
         r"--checkpoint \S+: cannot read checkpoint \S+: truncated, damaged or not a torch file",
         Command("tricks-validate", lambda ctx: ["--checkpoint",
                                                 str(ctx.truncated(ctx.run_folder() / "model_best.pth.tar"))])),
    Case("validate-missing-dataset", "`FASHION_MNIST_DIR` pointing to an empty folder",
         r"--dataset fashion_mnist: Fashion-MNIST file \S+ not found\. Install the dataset",
         Command("tricks-validate", lambda ctx: ["--checkpoint", str(ctx.run_folder() / "last.pth.tar")],
                 env=lambda ctx: {"FASHION_MNIST_DIR": str(ctx.empty_dir())}), folder=Ctx.run_folder),
    Case("validate-batch-zero", "`--batch-size 0`", r"--batch-size 0: must be an integer >= 1",
         Command("tricks-validate", lambda ctx: ["--checkpoint", str(ctx.run_folder() / "last.pth.tar"), "-b", "0"])),
    # ---- mm_ext.train: mm configs and checkpoints ----
    Case("mm-unknown-scheduler", "`--cfg-options param_scheduler.0.type=WarmupCosineLRR` (unknown trick)",
         r"'?WarmupCosineLRR is not in the .* registry",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work", "param_scheduler.0.type=WarmupCosineLRR"))),
    Case("mm-smoothing-eps-one", "`model.roi_head.bbox_head.loss_cls.epsilon=1.0`",
         r"epsilon must be a number in \[0, 1\), got 1\.0",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work",
                                                     "model.roi_head.bbox_head.loss_cls.epsilon=1.0"))),
    Case("mm-det-mixup-alpha-zero", "config adding `dict(type='DetectionMixupHook', alpha=0)` to `custom_hooks`",
         r"DetectionMixupHook alpha=0 is not accepted; accepted: a finite number > 0 \(the paper: 1\.5\)",
         Command("mm_ext.train", lambda ctx: ctx.mm(str(ctx.yaml("mixup.py", _mm_mixup_config(0))), ctx.tmp / "work"))),
    Case("mm-det-mixup-stock-heads", "`DetectionMixupHook` on a config whose RPN and RoI heads are MMDetection's own",
         r"DetectionMixupHook needs model.roi_head.type='MixWeightStandardRoIHead' \(or 'MixWeightCascadeRoIHead'\), "
         r"got StandardRoIHead, which would ignore the box weights",
         Command("mm_ext.train", lambda ctx: ctx.mm(str(ctx.yaml("mixup.py", _mm_mixup_config(1.5))), ctx.tmp / "work"))),
    Case("mm-seg-smoothing-form", "mmseg `model.decode_head.loss_decode.form=kl`",
         r"form must be one of \('paper', 'uniform'\), got 'kl'",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_SEG, ctx.tmp / "work", "model.decode_head.loss_decode.form=kl"))),
    Case("mm-warmup-longer-than-training", "`param_scheduler.0.warmup_steps=50` with `train_cfg.max_iters=3`",
         r"warmup_steps must be <= total_steps \(3\), got 50",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work", "param_scheduler.0.warmup_steps=50"))),
    Case("mm-step-milestone-past-training", "`TricksLR` step schedule with `milestones=[5]` and `train_cfg.max_iters=3`",
         r"milestones must be strictly increasing integers in \[1, total_steps=3\], got \(5,\)",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work", "param_scheduler.0.type=TricksLR",
                                                     "param_scheduler.0.schedule=step",
                                                     "param_scheduler.0.milestones=[5]"))),
    Case("mm-recipe-warmup-longer-than-training", "`--recipe` whose 10 warmup epochs exceed `train_cfg.max_iters=3`",
         r"--recipe \S+: at 4 iterations per epoch over train_cfg\.max_iters=3 its schedule is not valid "
         r"\(warmup_steps must be <= total_steps \(3\), got 40\)",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work", flags=(
             "--recipe", str(ctx.yaml("r.yaml", "warmup_epochs: 10\nepochs: 20\nschedule: cosine\n")), "--recipe-iters-per-epoch",
             "4")))),
    Case("mm-negative-lr", "`optim_wrapper.optimizer.lr=-0.1`",
         r"optim_wrapper\.optimizer\.lr=-0\.1; accepted: a finite number > 0",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work", "optim_wrapper.optimizer.lr=-0.1"))),
    Case("mm-batch-zero", "`train_dataloader.batch_size=0`",
         r"batch_size should be a positive integer value, but got batch_size=0",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work", "train_dataloader.batch_size=0"))),
    Case("mm-missing-dataset", "`FASHION_SCENES_ROOT` pointing to an empty folder",
         r"No such file or directory: '\S+/annotations/instances_train\.json'",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work"),
                 env=lambda ctx: {"FASHION_SCENES_ROOT": f"{ctx.empty_dir()}/"})),
    Case("mm-backbone-of-another-model", "a tricks_resnet26nd `backbone.pth` into `model_name=tricks_resnet18d`",
         r"\S+backbone\.pth: backbone load: \d+/\d+ tensors matched, .* shape mismatches \(key, source, model\)",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work", "model.backbone.model_name=tricks_resnet18d"))),
    Case("mm-backbone-missing-keys", "`backbone.pth` without its `layer4.*` tensors",
         r"\S+\.pth: backbone load: \d+/\d+ tensors matched, \d+ missing.*; missing \['layer4\.",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work",
                                                     f"model.backbone.checkpoint={ctx.backbone(_drop_layer4)}"))),
    Case("mm-backbone-pickle-payload", "`model.backbone.checkpoint` = a pickle that would call `open()`",
         r"refused to load \S+: it holds objects that weights_only loading does not allow \(.*GLOBAL (builtins|io)\.open",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work", f"model.backbone.checkpoint={ctx.payload()}"),
                 subprocess=True),
         check=_payload_did_not_run),
    Case("mm-resume-truncated", "`--resume` with the work dir's latest checkpoint cut in half",
         r"--resume \S+iter_2\.pth: cannot read checkpoint \S+: truncated, damaged or not a torch file",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work", flags=("--resume",))),
         folder=_existing_mm_work_dir),
    Case("mm-work-dir-under-a-file", "`--work-dir` below a regular file (not writable, even as root)",
         r"work dir '\S+/a_file/out': cannot write there \(Not a directory\)",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.under_file()))),
    Case("mm-non-finite-loss", "`optim_wrapper.optimizer.lr=1e30`: the loss overflows at iteration 2",
         r"non-finite loss at iteration 2 \(loss=(nan|inf)\): training stopped before this iteration's checkpoint; "
         r"the last checkpoint, \S+iter_1\.pth, keeps the last good state",
         Command("mm_ext.train", lambda ctx: ctx.mm(MM_DET, ctx.tmp / "work", "optim_wrapper.optimizer.lr=1e30")),
         check=_mm_kept_iteration_1),
    # ---- d2_ext.train_net: d2 yaml keys, checkpoints, data ----
    Case("d2-yaml-eps-one", "d2 yaml with `TRICKS: {LABEL_SMOOTHING: 1.0}`",
         r"bad config \S+: cfg\.TRICKS\.LABEL_SMOOTHING=1\.0 is not accepted; accepted: a number in \[0, 1\)",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", yaml=str(ctx.yaml(
             "d2.yaml", f'_BASE_: "{ROOT / D2_YAML}"\nTRICKS:\n  LABEL_SMOOTHING: 1.0\n'))))),
    Case("d2-unknown-model-name", "`TRICKS.TIMM.MODEL_NAME tricks_resnet26nz` (unknown variant)",
         r"model_name='tricks_resnet26nz' is not a timm model; accepted: the tricks_resnet\* names",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "TRICKS.TIMM.MODEL_NAME", "tricks_resnet26nz"))),
    Case("d2-warmup-longer-than-training", "`TRICKS.WARMUP_ITERS 10` with `SOLVER.MAX_ITER 3`",
         r"cfg\.TRICKS\.WARMUP_ITERS=10 is not accepted; accepted: at most SOLVER\.MAX_ITER=3",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "TRICKS.WARMUP_ITERS", "10"))),
    Case("d2-warmup-step-past-training", "`TRICKS.LR_SCHEDULE warmup_step` with `SOLVER.STEPS (5,)`, `MAX_ITER 3`",
         r"cfg\.SOLVER\.STEPS=\(5,\) is not accepted with TRICKS\.LR_SCHEDULE='warmup_step'; accepted: strictly "
         r"increasing iterations in \[1, SOLVER\.MAX_ITER=3\]",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "TRICKS.LR_SCHEDULE", "warmup_step",
                                                         "SOLVER.STEPS", "(5,)"))),
    Case("d2-negative-lr", "`SOLVER.BASE_LR -0.1` (in an existing OUTPUT_DIR)",
         r"cfg\.SOLVER\.BASE_LR=-0\.1 is not accepted; accepted: a finite number > 0",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "SOLVER.BASE_LR", "-0.1")),
         folder=_existing_d2_output),
    Case("d2-batch-zero", "`SOLVER.IMS_PER_BATCH 0`",
         r"cfg\.SOLVER\.IMS_PER_BATCH=0 is not accepted; accepted: an int >= 1",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "SOLVER.IMS_PER_BATCH", "0"))),
    Case("d2-zero-classes", "`MODEL.ROI_HEADS.NUM_CLASSES 0`",
         r"cfg\.MODEL\.ROI_HEADS\.NUM_CLASSES=0 is not accepted; accepted: an int >= 1 \(foreground classes\)",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "MODEL.ROI_HEADS.NUM_CLASSES", "0"))),
    Case("d2-det-mixup-alpha-negative", "`TRICKS.DET_MIXUP_ALPHA -1.5`",
         r"cfg\.TRICKS\.DET_MIXUP_ALPHA=-1\.5 is not accepted; accepted: a finite number > 0 \(the paper: 1\.5\), "
         r"or 0 for no detection mixup",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "TRICKS.DET_MIXUP_ALPHA", "-1.5"))),
    Case("d2-det-mixup-plain-rpn", "`TRICKS.DET_MIXUP_ALPHA 1.5` with Detectron2's own `RPN`",
         r"cfg\.TRICKS\.DET_MIXUP_ALPHA=1\.5: MODEL\.PROPOSAL_GENERATOR\.NAME='RPN' ignores the box weights; set "
         r"it to 'MixWeightRPN'",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "TRICKS.DET_MIXUP_ALPHA", "1.5"))),
    Case("d2-missing-dataset", "`DATASETS.TRAIN ('nope_train',)` (not registered)",
         r"Dataset 'nope_train' is not registered! Available datasets are: .*fashion_scenes_train",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "DATASETS.TRAIN", "('nope_train',)"))),
    Case("d2-backbone-mis-shaped", "`TRICKS.TIMM.CHECKPOINT` whose stem conv has 1 input channel, not 3",
         r"\S+\.pth: backbone load: .* 1 shape mismatches; shape mismatches \(key, source, model\) "
         r"\[\('conv1\.0\.weight', \(\d+, 1, 3, 3\), \(\d+, 3, 3, 3\)\)\]",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "TRICKS.TIMM.CHECKPOINT",
                                                         str(ctx.backbone(_reshape_stem))))),
    Case("d2-backbone-mis-shaped-existing-output", "the mis-shaped `TRICKS.TIMM.CHECKPOINT` in an existing OUTPUT_DIR",
         r"\S+\.pth: backbone load: .* 1 shape mismatches",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "TRICKS.TIMM.CHECKPOINT",
                                                         str(ctx.backbone(_reshape_stem)))),
         folder=_existing_d2_output),
    Case("d2-backbone-truncated", "`TRICKS.TIMM.CHECKPOINT` cut in half",
         r"cannot read checkpoint \S+: truncated, damaged or not a torch file",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "TRICKS.TIMM.CHECKPOINT",
                                                         str(ctx.truncated(ctx.backbone(lambda s: None)))),
                 subprocess=True)),
    Case("d2-output-under-a-file", "`OUTPUT_DIR` below a regular file",
         r"OUTPUT_DIR '\S+/a_file/out': cannot write there \(Not a directory\)",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.under_file()))),
    Case("d2-non-finite-loss", "`SOLVER.BASE_LR 1e30`: predictions overflow at iteration 2",
         r"non-finite values in training \(.*\): training stopped before that update; the last checkpoint, "
         r"\S+model_0000000\.pth, keeps the last good state",
         Command("d2_ext.train_net", lambda ctx: ctx.d2(ctx.tmp / "out", "SOLVER.BASE_LR", "1e30")),
         check=_d2_kept_iteration_1),
    # ---- plugins.reproduce and plugins.data.scenes ----
    Case("reproduce-unknown-preset", "`--preset huge`", r"--preset: unknown preset 'huge'; accepted: \['full', 'quick'\]",
         Command("plugins.reproduce", lambda ctx: ["--preset", "huge", "--out", str(ctx.tmp / "results")])),
    Case("reproduce-out-under-a-file", "`--out` below a regular file",
         r"--out \S+/a_file/out: cannot create the run folder \(Not a directory\)",
         Command("plugins.reproduce", lambda ctx: ["--out", str(ctx.under_file()), "--list"])),
    Case("reproduce-resume-from-missing", "`--resume-from` a folder that does not exist",
         r"--resume-from \S+/nowhere: not a folder \(one written by --pack\)",
         Command("plugins.reproduce", lambda ctx: ["--out", str(ctx.tmp / "results"), "--resume-from",
                                                   str(ctx.tmp / "nowhere")])),
    Case("scenes-negative-count", "`--train -1`", r"train=-1 must be an int >= 0",
         Command("plugins.data.scenes", lambda ctx: ["--out", str(ctx.tmp / "s"), "--train", "-1"])),
    Case("scenes-image-too-small", "`--image-size 16`", r"image_size=16 must be an int >= 32",
         Command("plugins.data.scenes", lambda ctx: ["--out", str(ctx.tmp / "s"), "--image-size", "16"])),
    Case("scenes-missing-fashion-mnist", "`FASHION_MNIST_DIR` pointing to an empty folder",
         r"Fashion-MNIST file \S+ not found\. Install the dataset",
         Command("plugins.data.scenes", lambda ctx: ["--out", str(ctx.tmp / "s"), "--train", "2", "--val", "1",
                                                     "--no-progress"],
                 env=lambda ctx: {"FASHION_MNIST_DIR": str(ctx.empty_dir())}, subprocess=True)),
]


def _non_image_folder(ctx: Ctx) -> Path:
    for split in ("train", "val"):
        (ctx.tmp / "images" / split / "cat").mkdir(parents=True)
        (ctx.tmp / "images" / split / "cat" / "notes.txt").write_text("not an image")
    return ctx.tmp / "images"


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def timm_run(tmp_path_factory, fashion_mnist):
    """A finished ``tricks-train`` run of ``TIMM_RUN`` (8 updates): timm's files, backbone.pth, csvs."""
    pytest.importorskip("timm")
    from timm_ext import train

    output = tmp_path_factory.mktemp("timm_run")
    with contextlib.redirect_stdout(io.StringIO()):
        assert train.main([*TIMM_RUN, "--output", str(output), "--experiment", "run", "--export-backbone",
                           str(output / "run" / "backbone.pth")]) == 0
    return output / "run"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch, request):
    framework = FRAMEWORK.get(case.runner.tool)
    if framework:
        pytest.importorskip(framework)
    ctx = Ctx(tmp_path, monkeypatch, request)
    folder = case.folder(ctx) if case.folder else None
    before = _snapshot(folder) if folder else None
    outcome = case.runner(ctx)
    prefix = TOOLS[case.runner.tool][2]
    assert outcome.status == 2, f"exit status {outcome.status}, expected 2; stderr:\n{outcome.stderr[-3000:]}"
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    errors = [line for line in outcome.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, f"expected one line starting with {prefix!r}:\n{outcome.stderr[-3000:]}"
    assert re.search(case.expected, errors[0][len(prefix):]), f"{errors[0]!r} does not match {case.expected!r}"
    if folder is not None:
        assert _snapshot(folder).items() >= before.items(), f"files written earlier in {folder} were changed"
    if case.check is not None:
        case.check(ctx)


def test_the_table_is_large_and_ids_are_unique():
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


# ---- docs/reliability.md ----------------------------------------------------------------------------------

def _constants(path: Path, names: tuple[str, ...]) -> dict[str, object]:
    """Module-level constants of ``path`` read without importing it (the distributed tests' tolerances)."""
    values = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", None) in names:
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_reliability_doc() -> str:
    """The text of docs/reliability.md, from ``CASES`` and the tolerances of test_rel_distributed.py."""
    tol = _constants(HERE / "test_rel_distributed.py", ("TIMM_LOSS_RTOL", "DETECTION_LOSS_RTOL"))
    rows = [f"| {_cell(case.input)} | `{case.runner.tool}`{' (subprocess)' if case.runner.subprocess else ''}"
            f"{' (existing folder)' if case.folder else ''} | `{_cell(case.expected)}` | "
            f"`test_rel_bad_input.py::test_bad_input[{case.id}]` |" for case in CASES]
    return "\n".join([
        "# Reliability",
        "",
        "Generated by `python tests/reliability/make_reliability_doc.py` from the tests in `tests/reliability/`;",
        "`test_rel_bad_input.py::test_reliability_doc_is_current` fails when this file and the tests differ.",
        "Run them with `pytest tests/reliability` (`-m distributed` selects the 2-process runs).",
        "",
        "## Exact resume after SIGKILL",
        "",
        "Each test (`test_rel_resume.py`) kills the training process with SIGKILL as soon as a checkpoint at a",
        "known update is on disk, resumes it with the command's own resume flag (with",
        "`TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`: every checkpoint is read with `weights_only`), and compares with the",
        "uninterrupted run on the CPU, fixed seed, one thread: weights and optimizer state bit-identical, and the",
        "same `lr_per_step.csv` (the lr of every update, so also of every update after the resume point).",
        "",
        "| adapter | what is killed | why the resume is exact |",
        "|---|---|---|",
        "| `timm_ext.train --resume recovery-1-0.pth.tar` | paper recipe + distillation + 2 micro-batches per "
        "update on timm's loop, after timm's recovery checkpoint of update 5 of 8 (`--recovery-interval 1`) | "
        "timm's checkpoint also holds the position in the epoch and the torch, NumPy and Python random streams; "
        "data order and flips are functions of (seed, epoch), mixup of (seed, epoch, batch) |",
        "| `mm_ext.train --resume` (mmdet Faster R-CNN, mmseg FCN) | 6 iterations, checkpoint every 2, after the "
        "checkpoint of iteration 4 (mmdet) / 2 (mmseg) | MMEngine skips the trained batches (same data order "
        "and numpy pipeline draws with a fixed `randomness.seed` and `num_workers=0`); `RandomStateHook` puts "
        "the torch stream (dropout, RPN/RoI sampling) in the checkpoint and restores it; validation leaves the "
        "streams untouched |",
        "| `d2_ext.train_net --resume` | 6 iterations, checkpoint every 2, after the checkpoint of iteration 4 | "
        "Detectron2 v0.6 saves no optimizer state and restarts its data stream: `d2_ext.Trainer` adds the "
        "optimizer (`_trainer`, as Detectron2 main) and the random streams to the checkpoint, skips the trained "
        "batches, then restores the streams; evaluation leaves the streams untouched |",
        "",
        "Limits: under DDP only rank 0 writes checkpoints, so every rank resumes with rank 0's random streams "
        "(the lr sequence stays exact, the weights are no longer bit-identical); with MMEngine the seed must be "
        "fixed (`--cfg-options randomness.seed=0`), otherwise a resumed run's sampler is seeded anew. "
        "Torch >= 2.6 loads with `weights_only=True`; `mm_ext.safe_load` allows the few MMEngine types a Runner "
        "checkpoint holds instead of turning `weights_only` off.",
        "",
        "## Two processes (`torchrun --nproc_per_node 2`, gloo, CPU)",
        "",
        "`test_rel_distributed.py` runs `timm_ext.train`, `mm_ext.train --launcher pytorch` and",
        "`d2_ext.train_net` (torchrun env://) under `rel_dist_probe.py` and compares with one process at the same",
        "global batch:",
        "",
        "- linear scaling uses the global batch: the lr of every update equals the single-process run's exactly;",
        "- the no-bias-decay param groups are the same on every rank and in the single-process run;",
        f"- the loss of every update matches within a relative tolerance of {tol['TIMM_LOSS_RTOL']:g} (timm_ext: "
        f"only BatchNorm statistics differ) and {tol['DETECTION_LOSS_RTOL']:g} (mm_ext, d2_ext: each process "
        "also draws its own RPN/RoI samples);",
        "- the distillation teacher (timm_ext) is not wrapped in DDP, requires and receives no gradient and is",
        "  unchanged;",
        "- only rank 0 writes into the output folder (Detectron2's own per-rank log `log.txt.rank1` excepted).",
        "",
        "## Bad input",
        "",
        "Every case exits with status 2 and prints exactly one error line (no traceback; `--debug` shows it);",
        "cases marked *existing folder* run in an output folder written earlier, whose files must stay",
        "byte-identical (sha256). Non-finite losses stop training before the damaged update is checkpointed.",
        "",
        "| input | command | expected message (regex) | test |",
        "|---|---|---|---|",
        *rows,
        "",
    ])


def test_reliability_doc_is_current():
    assert DOC.is_file(), "docs/reliability.md is missing: python tests/reliability/make_reliability_doc.py"
    assert DOC.read_text() == render_reliability_doc(), (
        "docs/reliability.md differs from the tests: python tests/reliability/make_reliability_doc.py")
