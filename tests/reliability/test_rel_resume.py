"""Exact resume after SIGKILL, for every adapter's command.

Each test runs the uninterrupted command and, at the same time, the same command that the test kills with
SIGKILL as soon as a checkpoint at a known update is on disk (the kill lands at whatever update the process
has reached by then); then it resumes the killed run with the command's own resume flag, with
``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` so that every checkpoint read is a ``weights_only`` read. On the CPU with
a fixed seed and one thread, the resumed run must end with bit-identical weights and optimizer state, and
write the same ``lr_per_step.csv`` (every row, so every update after the resume point used the same lr).

What makes each resume exact (see each adapter's docstring): timm_ext's recovery checkpoints (timm's) hold the
position in the epoch and the random streams, and data order, flips and mixup are drawn from ``(seed, epoch,
batch)``. MMEngine
skips the trained batches on resume; ``mm_ext.RandomStateHook`` carries the torch stream (dropout, RPN/RoI
sampling) through the checkpoint. Detectron2 v0.6 checkpoints no optimizer state and restarts its data
stream; ``d2_ext.Trainer`` adds the optimizer and random streams to the checkpoint and skips the trained
batches.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from .conftest import PYTHON, ROOT, command_env, kill_when

pytestmark = pytest.mark.slow

WEIGHTS_ONLY = {"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}


def _start(argv: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, *argv], cwd=cwd, env=command_env(**env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, what: str) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{what} failed: {err.decode(errors='replace')[-3000:]}"


def _assert_same_tensors(expected: dict, actual: dict, where: str) -> None:
    assert expected.keys() == actual.keys(), f"{where}: different keys"
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=f"{where}: {key}")
        elif isinstance(value, dict):
            _assert_same_tensors(value, actual[key], f"{where}.{key}")
        else:
            assert actual[key] == value, f"{where}: {key}"


def _optimizer_state(state: dict) -> dict:
    return {str(k): v for k, v in state["state"].items()}


def _checkpoint_after(path: Path, minimum: int, key) -> callable:
    """``ready()`` for :func:`kill_when`: the checkpoint at ``path`` records at least ``minimum`` updates."""
    seen = {"mtime": None}

    def ready() -> bool:
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == seen["mtime"]:
            return False
        seen["mtime"] = mtime
        return key(torch.load(path, map_location="cpu", weights_only=True)) >= minimum

    return ready


def test_timm_ext_train_resumes_exactly_with_distillation_and_accumulation(tmp_path, fashion_mnist, teacher):
    """Paper recipe (cosine + warmup, smoothing, mixup, no bias decay, zero gamma), a distillation teacher and
    2 micro-batches per update on timm's loop; killed after the recovery checkpoint of update 5 (mid-epoch 2 of
    2), resumed from it."""
    from timm_ext._timm_setup import load_train_checkpoint

    argv = ["-m", "timm_ext.train", "--dataset", "fashion_mnist", "--model", "tricks_resnet26nd", "--recipe", "paper",
            "--no-amp", "--epochs", "2", "--warmup-epochs", "0.5", "-b", "8", "--grad-accum-steps", "2",
            "--train-subset", "64", "--val-subset", "32", "--seed", "5", "--scale", "1", "1", "--ratio", "1", "1",
            "--color-jitter", "0", "--recovery-interval", "1", "--kd-teacher", str(teacher), "--kd-model",
            "tricks_resnet18d", "--experiment", "run"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = _start([*argv, "--output", str(straight)], tmp_path)
    victim = _start([*argv, "--output", str(killed)], tmp_path)
    recovery = killed / "run" / "recovery-1-0.pth.tar"  # update 5: the first of the second epoch's 4
    kill_when(victim, lambda: recovery.exists(), "the update-5 recovery checkpoint")
    _finish(reference, "the uninterrupted run")
    found = sorted((killed / "run").glob("recovery-1-*.pth.tar"))
    assert found, "no recovery checkpoint of the second epoch"
    resume_from = found[-1]
    position = load_train_checkpoint(str(resume_from), "--resume")["tricks_position"]
    assert position["epoch"] == 1 and 0 < position["next_batch"] < 8, "the run finished before it was killed"
    resumed = _start([*argv, "--output", str(killed), "--resume", str(resume_from)], tmp_path, **WEIGHTS_ONLY)
    _finish(resumed, "the resumed run")

    where = f"resumed at epoch 1, batch {position['next_batch']}"
    expected, actual = (load_train_checkpoint(str(d / "run" / "last.pth.tar"), "--resume") for d in (straight, killed))
    _assert_same_tensors(expected["state_dict"], actual["state_dict"], f"weights ({where})")
    _assert_same_tensors(_optimizer_state(expected["optimizer"]), _optimizer_state(actual["optimizer"]),
                         f"momentum ({where})")
    assert expected["metric"] == actual["metric"], where
    assert (killed / "run" / "lr_per_step.csv").read_text() == (straight / "run" / "lr_per_step.csv").read_text(), where


MM_CONFIGS = {
    "mmdet": ("faster-rcnn_timm-r26nd_fpn_tricks_fashion-scenes.py", 4),
    "mmseg": ("fcn_timm-r26nd-d8_tricks_fashion-scenes.py", 2),
}


@pytest.mark.parametrize("library", sorted(MM_CONFIGS))
def test_mm_ext_train_resumes_exactly(library, tmp_path, scenes, backbone):
    """6 iterations, a checkpoint every 2; killed after the checkpoint of iteration 4 (mmdet) or 2 (mmseg)."""
    pytest.importorskip(library)
    import mm_ext  # noqa: F401  (allows the few types of a Runner checkpoint under weights_only loading)

    config, kill_after = MM_CONFIGS[library]
    options = [f"model.backbone.checkpoint={backbone}", "train_cfg.max_iters=6", "train_cfg.val_interval=100",
               "train_dataloader.batch_size=2", "train_dataloader.num_workers=0",
               "train_dataloader.persistent_workers=False", "val_dataloader.num_workers=0",
               "val_dataloader.persistent_workers=False", "default_hooks.checkpoint.interval=2",
               "param_scheduler.0.warmup_steps=2", "randomness.seed=0"]
    argv = ["-m", "mm_ext.train", str(ROOT / "mm_ext" / "configs" / config)]
    env = {"FASHION_SCENES_ROOT": f"{scenes}/"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = _start([*argv, "--work-dir", str(straight), "--cfg-options", *options], tmp_path, **env)
    victim = _start([*argv, "--work-dir", str(killed), "--cfg-options", *options], tmp_path, **env)
    marker = killed / "last_checkpoint"
    kill_when(victim, lambda: marker.is_file() and marker.read_text().strip().endswith(f"iter_{kill_after}.pth"),
              f"the iteration-{kill_after} checkpoint")
    _finish(reference, "the uninterrupted run")
    resume_from = Path(marker.read_text().strip()).name
    assert not (killed / "iter_6.pth").exists(), "the run finished before it was killed"
    resumed = _start([*argv, "--work-dir", str(killed), "--resume", "--cfg-options", *options], tmp_path,
                     **env, **WEIGHTS_ONLY)
    _finish(resumed, "the resumed run")

    where = f"{library}, resumed from {resume_from}"
    expected, actual = (torch.load(d / "iter_6.pth", weights_only=True) for d in (straight, killed))
    assert actual["meta"]["iter"] == expected["meta"]["iter"] == 6
    _assert_same_tensors(expected["state_dict"], actual["state_dict"], f"weights ({where})")
    _assert_same_tensors(_optimizer_state(expected["optimizer"]), _optimizer_state(actual["optimizer"]),
                         f"momentum ({where})")
    lr_rows = (straight / "lr_per_step.csv").read_text()
    assert len(lr_rows.splitlines()) == 7, lr_rows
    assert (killed / "lr_per_step.csv").read_text() == lr_rows, where


def test_d2_ext_train_net_resumes_exactly(tmp_path, scenes, backbone):
    """6 iterations, a checkpoint every 2; killed after the checkpoint of iteration 4, resumed with --resume."""
    pytest.importorskip("detectron2")
    yaml = ROOT / "d2_ext" / "configs" / "faster_rcnn_timm_R_26n_D_FPN_tricks_fashion_scenes.yaml"
    opts = ["MODEL.DEVICE", "cpu", "TRICKS.TIMM.CHECKPOINT", str(backbone), "INPUT.MIN_SIZE_TRAIN", "(64,)",
            "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
            "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "6",
            "TRICKS.WARMUP_ITERS", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0", "SEED", "0",
            "DATASETS.TEST", "()"]

    def argv(output: Path, *flags: str) -> list[str]:
        return ["-m", "d2_ext.train_net", "--config-file", str(yaml), "--scenes-root", str(scenes), *flags, *opts,
                "OUTPUT_DIR", str(output)]

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = _start(argv(straight), tmp_path)
    victim = _start(argv(killed), tmp_path)
    marker = killed / "last_checkpoint"
    kill_when(victim, lambda: marker.is_file() and marker.read_text().strip() == "model_0000003.pth",
              "the iteration-4 checkpoint")
    _finish(reference, "the uninterrupted run")
    resume_from = marker.read_text().strip()
    assert not (killed / "model_final.pth").exists(), "the run finished before it was killed"
    _finish(_start(argv(killed, "--resume"), tmp_path, **WEIGHTS_ONLY), "the resumed run")

    where = f"resumed from {resume_from}"
    expected, actual = (torch.load(d / "model_final.pth", weights_only=True) for d in (straight, killed))
    assert actual["iteration"] == expected["iteration"] == 5
    _assert_same_tensors(expected["model"], actual["model"], f"weights ({where})")
    _assert_same_tensors(_optimizer_state(expected["trainer"]["_trainer"]["optimizer"]),
                         _optimizer_state(actual["trainer"]["_trainer"]["optimizer"]), f"momentum ({where})")
    lr_rows = (straight / "lr_per_step.csv").read_text()
    assert len(lr_rows.splitlines()) == 7, lr_rows
    assert (killed / "lr_per_step.csv").read_text() == lr_rows, where
