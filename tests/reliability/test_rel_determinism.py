"""Two runs of the same study stage are bitwise equal on one machine: a classification stage as the study runs it
(bfloat16 autocast where the CPU has it, channels_last, label smoothing, the clean training subset and the
calibration error) and the Detectron2 transfer of its backbone, each through the study's own Pipeline with the
stage's pinned threads. What can still differ across machines (thread count, kernels) is measured by
``benchmarks/bench_reproducibility.py``."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch

from plugins.reproduce.pipeline import Pipeline
from plugins.reproduce.presets import get_preset
from plugins.reproduce.study import build_stages

pytestmark = pytest.mark.slow

TIMING = {"epoch_time", "epoch_cpu_time", "images_per_s"}


def _tiny():
    return dataclasses.replace(
        get_preset("quick"), name="tiny", train_subset=512, val_subset=128, clean_subset=64, epochs=2,
        teacher_epochs=2, ladder=((2, (0,)),), standard_budgets=((2, (0,)),), scenes_train=8, scenes_val=4,
        scene_size=64, det_iters=6, seg_iters=6, det_warmup_iters=2, transfer_batch=2, batch_size=32,
        det_ablation_frameworks=())


def _run(run_dir, stages):
    pipe = Pipeline(run_dir, stages, echo=lambda *_: None)
    pipe.run()
    return pipe


def _summary(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _d2_losses(path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return [{k: v for k, v in r.items() if "time" not in k and k != "eta_seconds"} for r in rows]


def test_two_runs_of_a_stage_are_bitwise_equal(tmp_path, fashion_mnist):
    preset = _tiny()
    wanted = {"cls-label-smoothing-s0", "data-fashion-scenes", "det-d2-label-smoothing-e2-s0"}
    runs = []
    for name in ("a", "b"):
        stages = [s for s in build_stages(preset, tmp_path / name) if s.name in wanted]
        assert {s.name for s in stages} == wanted
        runs.append(_run(tmp_path / name, stages))
    a, b = runs
    cls_a, cls_b = a.stage_dir("cls-label-smoothing-s0"), b.stage_dir("cls-label-smoothing-s0")
    assert cls_a.name == cls_b.name, "the same stage key"
    assert _summary(cls_a / "train" / "summary.csv") == _summary(cls_b / "train" / "summary.csv")
    wa = torch.load(cls_a / "backbone.pth", weights_only=True)["state_dict"]
    wb = torch.load(cls_b / "backbone.pth", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "backbone weights differ"
    det_a, det_b = a.stage_dir("det-d2-label-smoothing-e2-s0"), b.stage_dir("det-d2-label-smoothing-e2-s0")
    assert _d2_losses(det_a / "metrics.json") == _d2_losses(det_b / "metrics.json")
    assert a.results["det-d2-label-smoothing-e2-s0"] == b.results["det-d2-label-smoothing-e2-s0"]
