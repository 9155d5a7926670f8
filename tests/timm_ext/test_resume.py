"""--resume continues exactly (SIGKILL mid-epoch), a non-finite loss stops cleanly, and torchrun works."""

import signal
import subprocess
import sys
import time

import pytest
import torch

from plugins.runtime.checkpoint import load_checkpoint
from timm_ext import train as train_cmd

COMMON = ["--model", "tricks_resnet26nd", "--recipe", "paper", "--epochs", "2", "--warmup-epochs", "0.5", "-b", "32",
          "--train-subset", "256", "--val-subset", "64", "--seed", "3", "--no-progress", "--checkpoint-interval", "3"]


def _train(env, output, *extra, wait=True):
    argv = [sys.executable, "-m", "timm_ext.train", *COMMON, "--output", str(output), *extra]
    if not wait:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def _wait_for_mid_epoch_checkpoint(path, proc, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            ckpt = torch.load(path, weights_only=True)
        except (FileNotFoundError, RuntimeError, EOFError):
            ckpt = None
        if ckpt is not None and ckpt["step_in_epoch"] > 0:
            return
        time.sleep(0.01)
    pytest.fail("no mid-epoch checkpoint appeared before the run ended")


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(tmp_path, fashion_mnist, command_env):
    _train(command_env, tmp_path / "straight")
    proc = _train(command_env, tmp_path / "killed", wait=False)
    _wait_for_mid_epoch_checkpoint(tmp_path / "killed" / "last.pth", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    interrupted = load_checkpoint(tmp_path / "killed" / "last.pth")
    assert interrupted["global_step"] < 16, "the run finished before it was killed"
    _train(command_env, tmp_path / "killed", "--resume", str(tmp_path / "killed" / "last.pth"))

    straight = load_checkpoint(tmp_path / "straight" / "last.pth")
    resumed = load_checkpoint(tmp_path / "killed" / "last.pth")
    position = f"resumed at epoch {interrupted['epoch']}, update {interrupted['step_in_epoch']} of the epoch"
    assert straight["model"].keys() == resumed["model"].keys()
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=f"{key} ({position})")
    assert [h["val_top1"] for h in resumed["history"]] == [h["val_top1"] for h in straight["history"]], position
    lr_straight = (tmp_path / "straight" / "lr_per_step.csv").read_text()
    assert (tmp_path / "killed" / "lr_per_step.csv").read_text() == lr_straight, f"lr per update ({position})"


@pytest.mark.slow
def test_non_finite_loss_and_mismatched_resume_exit_2_and_keep_the_last_checkpoint(tmp_path, capsys, fashion_mnist):
    torch.set_num_threads(1)
    output = tmp_path / "run"
    small = ["--recipe", "baseline", "--epochs", "1", "--decay-milestones", "1", "-b", "16", "--train-subset", "64", "--val-subset", "16",
             "--no-progress", "--output", str(output)]
    assert train_cmd.main(small) == 0
    before = (output / "last.pth").read_bytes()
    capsys.readouterr()
    assert train_cmd.main([*small, "--lr", "1e30", "--log-interval", "1"]) == 2
    err = capsys.readouterr().err
    assert "non-finite loss at update" in err and "Traceback" not in err, err
    assert (output / "last.pth").read_bytes() == before
    resume = ["--resume", str(output / "last.pth")]
    assert train_cmd.main([*small, "-b", "8", *resume]) == 2  # other batch: other positions in the epoch
    assert "--resume" in capsys.readouterr().err
    assert train_cmd.main([*small, "--no-bias-decay", *resume]) == 2  # two param groups instead of one
    assert "param groups" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes_give_the_single_process_lr_curve(tmp_path, fashion_mnist, command_env):
    argv = [*COMMON, "--epochs", "1", "-b", "16"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "timm_ext.train", *argv, "--output", str(tmp_path / "ddp")], env=command_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = train_cmd.run([*argv, "-b", "32", "--output", str(tmp_path / "single")])
    ddp = load_checkpoint(tmp_path / "ddp" / "last.pth")
    assert ddp["args"]["batch_size"] == 16 and ddp["recipe"]["batch_size"] == 32  # global batch 2 x 16
    assert (tmp_path / "ddp" / "lr_per_step.csv").read_text() == (tmp_path / "single" / "lr_per_step.csv").read_text()
    assert ddp["global_step"] == len(single.lrs) == 8
    assert len(list((tmp_path / "ddp").glob("*.pth"))) == 3  # last, best, backbone: rank 0 only
