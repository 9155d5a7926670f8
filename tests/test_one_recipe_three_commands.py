"""One recipe file, the three commands users run, three lr_per_step.csv that equal the recipe's closed form.

``tricks-train`` (timm), ``python -m mm_ext.train`` (MMDetection's Faster R-CNN config) and
``python -m d2_ext.train_net`` (Detectron2's) each take the same recipe yaml: warmup + step decay, no bias decay
(two param groups), at 4 updates per epoch (8 images at batch 2 in each). Every recorded lr of every group must
be ``Recipe.lr_at(i, 4)`` to the last bit. The batch equals ``base_batch_size``, so MMEngine's ``auto_scale_lr``
(``lr * real / base``) and the recipe's ``base_lr * batch / base`` are the same float.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("detectron2")

from plugins.recipe import Recipe  # noqa: E402
from plugins.runtime.lr_record import read_lr_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = """\
base_lr: 0.02
base_batch_size: 2
batch_size: 2
epochs: 2
warmup_epochs: 0.5
schedule: step
step_milestones: [1]
step_gamma: 0.1
no_bias_decay: true
"""
PER_EPOCH, TOTAL = 4, 8


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from plugins.data.scenes import generate_scenes

    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(root, train=8, val=2, image_size=128, seed=0, progress=False)
    return root


def _run(argv, cwd, env=None):
    result = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=900,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, (argv[:2], result.stdout[-2000:], result.stderr[-3000:])


@pytest.mark.slow
def test_one_recipe_file_three_commands_same_lr_at_every_update(scenes, tmp_path):
    recipe_path = tmp_path / "my_recipe.yaml"
    recipe_path.write_text(RECIPE)
    recipe = Recipe.from_yaml(recipe_path)
    expected = [recipe.lr_at(i, PER_EPOCH) for i in range(1, TOTAL + 1)]
    assert expected[0] == recipe.scaled_lr() / 2 and expected[-1] == pytest.approx(recipe.scaled_lr() * 0.1)

    _run(["-m", "timm_ext.train", "--model", "tricks_resnet26nd", "--recipe", str(recipe_path), "--dataset",
          "fashion_mnist", "--train-subset", "8", "--val-subset", "4", "--workers", "0",
          "--output", str(tmp_path / "timm")], ROOT)
    _run(["-m", "mm_ext.train", "mm_ext/configs/faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py",
          "--recipe", str(recipe_path), "--work-dir", str(tmp_path / "mm"), "--cfg-options",
          "model.backbone.checkpoint=None", f"train_cfg.max_iters={TOTAL}", f"train_cfg.val_interval={TOTAL + 1}",
          "train_dataloader.batch_size=2", "train_dataloader.num_workers=0",
          "train_dataloader.persistent_workers=False", f"default_hooks.checkpoint.interval={TOTAL}"],
         ROOT, env={"FASHION_SCENES_ROOT": f"{scenes}/"})
    _run(["-m", "d2_ext.train_net", "--config-file",
          "d2_ext/configs/faster_rcnn_timm_R_26n_D_FPN_baseline_fashion_scenes.yaml", "--scenes-root", str(scenes),
          "--recipe", str(recipe_path), "OUTPUT_DIR", str(tmp_path / "d2"), "TRICKS.TIMM.CHECKPOINT", "",
          "SOLVER.MAX_ITER", str(TOTAL), "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "1000",
          "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0"], ROOT)

    for name in ("timm", "mm", "d2"):
        steps, lrs = read_lr_record(next((tmp_path / name).rglob("lr_per_step.csv")))
        assert steps == list(range(1, TOTAL + 1)), name
        assert len(lrs) == 2, f"{name}: no_bias_decay gives two param groups, found {len(lrs)}"
        for g, group in enumerate(lrs):
            assert group == expected, f"{name} group {g}: {group} != {expected}"
