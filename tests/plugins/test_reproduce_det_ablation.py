"""The study's Bag of Freebies detection ablation: its stages (rows, frameworks, seeds, backbone, recipe files) and
its report tables."""

import json

import pytest

from plugins.recipe import Recipe
from plugins.reproduce.pipeline import Pipeline
from plugins.reproduce.presets import get_preset
from plugins.reproduce.report import write_report
from plugins.reproduce.study import (
    DET_ABLATION_ROWS,
    build_stages,
    cls_stage_name,
    det_ablation_stage_name,
    transfer_recipes,
)


@pytest.mark.parametrize("preset, frameworks", [("full", ("mmdet", "d2")), ("quick", ("d2",))])
def test_every_row_runs_per_framework_and_detector_seed_from_the_d_efficient_backbone(preset, frameworks, tmp_path):
    p = get_preset(preset)
    stages = {s.name: s for s in build_stages(p, tmp_path)}
    Pipeline(tmp_path, list(stages.values()))  # unique names
    ablation = [n for n in stages if n.startswith("detab-")]
    assert len(ablation) == len(DET_ABLATION_ROWS) * len(frameworks) * len(p.transfer_seeds)
    for seed in p.transfer_seeds:
        for row in DET_ABLATION_ROWS:
            for framework in frameworks:
                st = stages[det_ablation_stage_name(framework, row, seed)]
                assert st.deps == [cls_stage_name("D-efficient", p.seeds[0]), "data-fashion-scenes"]
                assert st.argv[-1] in (f"randomness.seed={seed}", str(seed))
                if framework == "d2":
                    args = dict(zip(st.argv[::2], st.argv[1::2], strict=False))
                    assert "MixWeightRPN" in st.argv and "LabelSmoothingStandardROIHeads" in st.argv, args


def test_the_rows_stack_one_detector_trick_each(tmp_path):
    p = get_preset("full")
    stages = {s.name: s for s in build_stages(p, tmp_path)}

    def recipe(row):  # the row's recipe file, its free label aside
        st = stages[det_ablation_stage_name("mmdet", row, 0)]
        return Recipe.load(st.argv[st.argv.index("--recipe") + 1].replace("{run}", str(tmp_path))).with_overrides(
            name=None)

    base = recipe("baseline (step)")
    assert base == Recipe.from_dict(transfer_recipes(p)["detector"]), "the transfer tables' detector recipe"
    assert recipe("+ cosine") == base.with_overrides(schedule="cosine")
    assert recipe("+ label smoothing") == recipe("+ cosine").with_overrides(label_smoothing=0.1)
    assert recipe("+ mixup") == recipe("+ label smoothing").with_overrides(det_mixup_alpha=1.5)
    assert recipe("+ mixup, fixed 0.5 blend") == recipe("+ mixup").with_overrides(det_mixup_fixed_ratio=0.5)


def test_report_has_the_ablation_tables_with_the_papers_column(tmp_path):
    p = get_preset("full")
    results = {}
    for i, seed in enumerate(p.transfer_seeds):
        for j, row in enumerate(DET_ABLATION_ROWS):
            results[det_ablation_stage_name("mmdet", row, seed)] = {"coco/bbox_mAP": 20.0 + j + i,
                                                                    "coco/bbox_mAP_50": 40.0 + j}
            results[det_ablation_stage_name("d2", row, seed)] = {"bbox/AP": 18.0 + j, "bbox/AP50": 38.0}
    write_report(tmp_path, p, results, {"command": "cmd", "machine": "m", "wall_time": "1 min"})
    md = (tmp_path / "report.md").read_text()
    assert "### Detection tricks (Bag of Freebies): Faster R-CNN, MMDetection" in md
    assert "| + cosine | 22.00 ± 1.00 | 41.00 ± 0.00 | +1.00 ± 0.00 (3/3) | baseline (step) | 79.59 | +0.82 |" in md
    assert ("| + mixup, fixed 0.5 blend | 25.00 ± 1.00 | 44.00 ± 0.00 | +1.00 ± 0.00 (3/3) | + mixup |  |  |" in md), (
        "no paper row")
    assert "### Detection tricks (Bag of Freebies): Faster R-CNN, Detectron2" in md
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["tables"]["detection_ablation_d2"]["+ mixup"]["mAP"] == [21.0, 21.0, 21.0]
    for framework in ("mmdet", "d2"):  # and a bar chart each, linked from the report
        assert (tmp_path / f"bars_detection_ablation_{framework}.png").stat().st_size > 1000
        assert f"(bars_detection_ablation_{framework}.png)" in md


def test_report_without_the_ablation_has_no_ablation_table(tmp_path):
    write_report(tmp_path, get_preset("quick"), {}, {"command": "cmd", "machine": "m", "wall_time": "1 min"})
    assert "Bag of Freebies" not in (tmp_path / "report.md").read_text()
