"""--resume on timm's loop continues exactly (SIGKILL mid-epoch, resumed from timm's recovery checkpoint), a
non-finite loss stops cleanly, and torchrun gives the single-process lr curve."""

import csv
import signal
import subprocess
import sys
import time

import pytest
import torch

from timm_ext import train as train_cmd
from timm_ext._timm_setup import load_train_checkpoint

COMMON = ["--dataset", "fashion_mnist", "--model", "tricks_resnet26nd", "--recipe", "paper", "--epochs", "2",
          "--warmup-epochs", "0.5", "-b", "32", "--train-subset", "256", "--val-subset", "64", "--seed", "3",
          "--no-amp", "--scale", "1", "1", "--ratio", "1", "1", "--color-jitter", "0", "--recovery-interval", "3",
          "--drop-path", "0.1", "--experiment", "run"]


def _train(env, output, *extra, wait=True):
    argv = [sys.executable, "-m", "timm_ext.train", *COMMON, "--output", str(output), *extra]
    if not wait:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _wait_for_recovery(folder, proc, timeout=240.0):
    """The first recovery checkpoint of the second epoch (mid-epoch, after the first epoch's files)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = sorted(folder.glob("recovery-1-*.pth.tar"))
        if found:
            return found[0]
        time.sleep(0.01)
    pytest.fail("no mid-epoch recovery checkpoint appeared before the run ended")


def _timing_free(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("images_per_s", "epoch_time", "epoch_cpu_time")} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(tmp_path, fashion_mnist, command_env):
    _train(command_env, tmp_path / "straight")
    proc = _train(command_env, tmp_path / "killed", wait=False)
    recovery = _wait_for_recovery(tmp_path / "killed" / "run", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    position = load_train_checkpoint(str(recovery), "--resume")["tricks_position"]
    assert position["epoch"] == 1 and 0 < position["next_batch"] < 8, "the run was not killed mid-epoch"
    _train(command_env, tmp_path / "killed", "--resume", str(recovery))

    straight = load_train_checkpoint(str(tmp_path / "straight" / "run" / "last.pth.tar"), "--resume")
    resumed = load_train_checkpoint(str(tmp_path / "killed" / "run" / "last.pth.tar"), "--resume")
    where = f"resumed at epoch {position['epoch']}, batch {position['next_batch']}"
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=f"{key} ({where})")
    for key, value in straight["optimizer"]["state"].items():
        torch.testing.assert_close(resumed["optimizer"]["state"][key]["momentum_buffer"], value["momentum_buffer"],
                                   rtol=0, atol=0, msg=f"momentum {key} ({where})")
    runs = {name: tmp_path / name / "run" for name in ("straight", "killed")}
    assert _timing_free(runs["killed"] / "summary.csv") == _timing_free(runs["straight"] / "summary.csv"), where
    lr_straight = (runs["straight"] / "lr_per_step.csv").read_text()
    assert (runs["killed"] / "lr_per_step.csv").read_text() == lr_straight, f"lr per update ({where})"


@pytest.mark.slow
def test_non_finite_loss_and_mismatched_resume_exit_2_and_keep_the_last_checkpoint(tmp_path, capsys, fashion_mnist):
    torch.set_num_threads(1)
    output = tmp_path / "out"
    small = ["--dataset", "fashion_mnist", "--model", "tricks_resnet26nb", "--recipe", "baseline", "--epochs", "1",
             "-b", "16", "--train-subset", "64", "--val-subset", "16", "--scale", "1", "1", "--ratio", "1", "1",
             "--color-jitter", "0", "--output", str(output), "--experiment", "run"]
    assert train_cmd.main(small) == 0
    last = output / "run" / "last.pth.tar"
    before = last.read_bytes()
    capsys.readouterr()
    assert train_cmd.main([*small, "--lr", "1e30"]) == 2
    err = capsys.readouterr().err
    assert "non-finite loss (nan) at update 2" in err and "Traceback" not in err, err
    assert last.read_bytes() == before
    resume = ["--resume", str(last)]
    assert train_cmd.main([*small, "-b", "8", *resume]) == 2  # other batch: other positions in the epoch
    assert "--resume" in (err := capsys.readouterr().err) and "updates per epoch" in err
    assert train_cmd.main([*small, "--no-bias-decay", *resume]) == 2  # two param groups instead of one
    assert "param groups" in capsys.readouterr().err
    assert last.read_bytes() == before


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes_give_the_single_process_lr_curve(tmp_path, fashion_mnist, command_env):
    argv = [*COMMON, "--epochs", "1", "-b", "16"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "timm_ext.train", *argv, "--output", str(tmp_path / "ddp")], env=command_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert train_cmd.main([*argv, "-b", "32", "--output", str(tmp_path / "single")]) == 0
    ddp = load_train_checkpoint(str(tmp_path / "ddp" / "run" / "last.pth.tar"), "--resume")
    assert ddp["args"].batch_size == 16 and ddp["args"].world_size == 2  # global batch 2 x 16
    ddp_lrs = (tmp_path / "ddp" / "run" / "lr_per_step.csv").read_text()
    assert ddp_lrs == (tmp_path / "single" / "run" / "lr_per_step.csv").read_text()
    assert len(ddp_lrs.splitlines()) == 1 + 8
    assert {p.name for p in (tmp_path / "ddp").rglob("*.pth.tar")} >= {"last.pth.tar", "model_best.pth.tar"}
