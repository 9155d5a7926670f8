"""python -m d2_ext.train_net: clear config errors (exit 2), and a real CPU run that writes the scenes, trains,
evaluates, then evaluates its own checkpoint with --eval-only."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("detectron2")

import d2_ext  # noqa: E402
from d2_ext.train_net import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TRICKS_YAML = d2_ext.get_config_file("faster_rcnn_timm_R_26n_D_FPN_tricks_fashion_scenes.yaml")


@pytest.mark.parametrize(("opts", "fragment"), [
    (["TRICKS.MIXUP", "0.2"], "TRICKS.MIXUP"),
    (["TRICKS.LABEL_SMOOTHING_FORM", "eps/K"], "cfg.TRICKS.LABEL_SMOOTHING_FORM='eps/K'"),
    (["TRICKS.LR_SCHEDULE", "cosine"], "cfg.TRICKS.LR_SCHEDULE='cosine'"),
])
def test_bad_config_exits_2_without_traceback(opts, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        cli(["--config-file", TRICKS_YAML, *opts])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_unknown_key_in_yaml_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{TRICKS_YAML}"\nTRICKS:\n  WARMUP_EPOCHS: 5\n')
    with pytest.raises(SystemExit) as info:
        cli(["--config-file", str(bad)])
    assert info.value.code == 2 and "TRICKS.WARMUP_EPOCHS" in capsys.readouterr().err


def test_debug_shows_the_error():
    with pytest.raises(ValueError, match="LABEL_SMOOTHING"):
        cli(["--config-file", TRICKS_YAML, "--debug", "TRICKS.LABEL_SMOOTHING", "1.5"])


def _run(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "d2_ext.train_net", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cpu_run_trains_evaluates_and_reloads(exported_backbone, tmp_path):
    _, backbone = exported_backbone
    scenes, output = tmp_path / "scenes", tmp_path / "output"
    common = ["--config-file", TRICKS_YAML, "--scenes-root", str(scenes), "--scenes-train", "6", "--scenes-val", "3",
              "--scenes-size", "96"]
    opts = ["MODEL.DEVICE", "cpu", "TRICKS.TIMM.CHECKPOINT", str(backbone), "OUTPUT_DIR", str(output),
            "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "96",
            "INPUT.MAX_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2",
            "SOLVER.MAX_ITER", "2", "TRICKS.WARMUP_ITERS", "1", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    run = _run([*common, *opts], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (scenes / "annotations" / "instances_train.json").is_file(), "scenes written on demand"
    assert (output / "model_final.pth").is_file() and (output / "config.yaml").is_file()
    metrics = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    assert any("bbox/AP" in m for m in metrics), "evaluated at the end of training"
    assert (output / "inference" / "fashion_scenes_val" / "coco_instances_results.json").is_file()

    evaluation = _run([*common, "--eval-only", *opts, "MODEL.WEIGHTS", str(output / "model_final.pth")], tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert "Evaluation results for fashion_scenes_val" in evaluation.stdout + evaluation.stderr
