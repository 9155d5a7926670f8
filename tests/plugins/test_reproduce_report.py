"""The study's report: tables with seed spread and paired deltas, the efficient-training table, the random
control, transfer against top-1, stage time over invocations, and the run's commit."""

import json

import pytest

from plugins.reproduce.presets import get_preset
from plugins.reproduce.report import write_report
from plugins.reproduce.study import (
    RANDOM_ROW,
    STACKED_ROWS,
    TWEAK_ROWS,
    cls_stage_name,
    transfer_rows,
    transfer_slug,
)


def test_report_tables_show_deltas_and_seed_spread(tmp_path):
    p = get_preset("full")
    results = {}
    for i, s in enumerate(p.seeds):
        for v in TWEAK_ROWS:
            results[f"cls-tweak-{v}-s{s}"] = {"val_top1": 85.0 + i}
        for j, r in enumerate(STACKED_ROWS):  # D-efficient is the tweak table's D run
            results[cls_stage_name(r, s)] = {"val_top1": 80.0 + j + i, "curve": [70.0, 80.0 + j]}
        results[f"cls-teacher-s{s}"] = {"val_top1": 90.0}
    write_report(tmp_path, p, results, {"command": "cmd", "machine": "m", "wall_time": "1 min"})
    md = (tmp_path / "report.md").read_text()
    # rows differ by 1.0 on every seed; seeds 0, 1, 2 give a standard deviation of 1.0
    assert "| + cosine | 83.00 ± 1.00 | +1.00 ± 0.00 (3/3) | D-efficient | 77.91 | +0.75 |" in md
    assert "| B-standard | 81.00 ± 1.00 |  |  | 75.30 |  |" in md
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["tables"]["stacked"]["D-efficient"]["top1"] == [81.0, 82.0, 83.0]
    assert (tmp_path / "bars_stacked.png").stat().st_size > 1000
    assert "n/a" in md, "missing transfer results are shown as n/a, not dropped"


def test_report_deltas_are_paired_over_seeds(tmp_path):
    """Δ is formed per seed: a row that is better on two seeds and worse on one shows that, not only the means."""
    p = get_preset("full")
    assert len(p.seeds) == 3
    tweaks = {"A": [80.0, 81.0, 82.0], "B": [80.5, 82.0, 81.5], "C": [80.5, 82.0, 81.5], "D": [85.0, 85.0, 85.0]}
    results = {f"cls-tweak-{v}-s{s}": {"val_top1": tweaks[v][i]} for v in TWEAK_ROWS for i, s in enumerate(p.seeds)}
    write_report(tmp_path, p, results, {"command": "cmd", "machine": "m", "wall_time": "1 min"})
    md = (tmp_path / "report.md").read_text()
    # B - A per seed: +0.5, +1.0, -0.5 -> mean 0.333, sd 0.764, two of three seeds positive
    assert "| B | 81.33 ± 0.76 | +0.33 ± 0.76 (2/3) | A |" in md
    assert "| C | 81.33 ± 0.76 | +0.00 ± 0.00 (0/3) | B |" in md, "no difference agrees with no sign"
    assert "| D | 85.00 ± 0.00 | +3.67 ± 0.76 (3/3) | C |" in md
    assert "paired over those seeds" in md, "transfer rows say what their spread is over"


def test_report_only_rewrites_the_report_from_results_json(tmp_path, capsys):
    """--report-only runs no stage: it re-renders from results.json, keeping the original command and wall time."""
    from plugins.reproduce.cli import main

    p = get_preset("quick")
    results = {f"cls-tweak-{v}-s0": {"val_top1": 80.0 + i} for i, v in enumerate(TWEAK_ROWS)}
    meta = {"command": "python -m plugins.reproduce --preset quick", "machine": "m", "wall_time": "17.7 min"}
    write_report(tmp_path, p, results, meta)
    (tmp_path / "report.md").write_text("stale")
    assert main(["--preset", "quick", "--out", str(tmp_path), "--report-only"]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "Wall time: 17.7 min" in md and "| D | 83.00 | +1.00 | C |" in md
    assert not (tmp_path / "stages").exists() and not (tmp_path / "recipes").exists(), "nothing ran"
    # a results.json of other sizes, or none, is refused with a one-line error naming the option
    assert main(["--preset", "full", "--out", str(tmp_path), "--report-only"]) == 2
    assert "other sizes than preset 'full'" in capsys.readouterr().err
    assert main(["--preset", "quick", "--out", str(tmp_path / "empty"), "--report-only"]) == 2
    assert "does not exist; run the study first" in capsys.readouterr().err


def test_report_counts_stage_time_over_invocations(tmp_path):
    """An interrupted and resumed study reports the sum of its stages' run times, not only the last invocation's."""
    import os

    p = get_preset("quick")
    results = {f"cls-tweak-{v}-s0": {"val_top1": 80.0} for v in TWEAK_ROWS}
    for name in results:
        (tmp_path / "stages" / f"{name}-new").mkdir(parents=True)
        (tmp_path / "stages" / f"{name}-new" / "stage.json").write_text(json.dumps({"seconds": 30.0}))
    stale = tmp_path / "stages" / "cls-tweak-A-s0-old" / "stage.json"  # an older code version's run of one stage
    stale.parent.mkdir()
    stale.write_text(json.dumps({"seconds": 100.0}))
    os.utime(stale, (1, 1))
    write_report(tmp_path, p, results, {"command": "c", "machine": "m", "wall_time": "0.5 min"})
    md = (tmp_path / "report.md").read_text()
    assert "Wall time: 0.5 min (this invocation); stage time, all invocations: 2.0 min" in md
    # the pipeline's own folders win over the newest-folder rule
    dirs = {name: tmp_path / "stages" / f"{name}-new" for name in results}
    dirs["cls-tweak-A-s0"] = stale.parent
    write_report(tmp_path, p, results, {"command": "c", "machine": "m", "wall_time": "0.5 min"}, dirs)
    assert "stage time, all invocations: 3.2 min" in (tmp_path / "report.md").read_text()


def test_report_has_the_random_control(tmp_path):
    p = get_preset("full")
    results = {}
    for i, s in enumerate(p.transfer_seeds):
        results[f"det-d2-{transfer_slug(RANDOM_ROW)}-s{s}"] = {"bbox/AP": 5.0 + i, "bbox/AP50": 10.0}
        results[f"det-d2-B-standard-e8-s{s}"] = {"bbox/AP": 30.0 + 2 * i, "bbox/AP50": 60.0}
    write_report(tmp_path, p, results, {"command": "c", "machine": "m", "wall_time": "1 min", "low_precision": True})
    md = (tmp_path / "report.md").read_text()
    assert "| random init (D) | 6.00 ± 1.00 | 10.00 ± 0.00 |  |  |" in md
    assert "| B-standard @8 | 32.00 ± 2.00 | 60.00 ± 0.00 | +26.00 ± 1.00 (3/3) | random init (D) | 77.54 |" in md


def test_spearman_against_hand_values():
    from plugins.reproduce.report import spearman

    assert spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x 1..5, y (2, 1, 4, 3, 5): d^2 = 1+1+1+1+0 = 4, rho = 1 - 6*4/(5*24) = 0.8
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # a tie shares its mean rank: y ranks (1.5, 1.5, 3, 4, 5)
    assert spearman([1, 2, 3, 4, 5], [7, 7, 8, 9, 10]) == pytest.approx(statistics_corr([1, 2, 3, 4, 5],
                                                                                        [1.5, 1.5, 3, 4, 5]))
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def statistics_corr(a, b):
    import statistics

    return statistics.correlation(a, b)


def test_report_sets_transfer_against_top1_with_ranks(tmp_path):
    """The section and figure on the paper's transfer claim: each backbone's top-1 beside its mean transfer
    metric, and Spearman's ρ over the rows each framework ran; here detection rises with top-1 (ρ = +1) and
    segmentation falls (ρ = -1). MMDetection runs fewer rows (n/a elsewhere)."""
    p = get_preset("full")
    labels = [r for r in transfer_rows(p) if r != RANDOM_ROW]
    results = {}
    for k, r in enumerate(labels):
        src = transfer_rows(p)[r][0]
        results[src] = {"val_top1": 60.0 + k, "curve": [50.0]}
        for s in p.transfer_seeds:
            if r.rpartition(" @")[0] in p.mmdet_transfer_rows:
                results[f"det-mmdet-{transfer_slug(r)}-s{s}"] = {"coco/bbox_mAP": 10.0 + k + 0.1 * s,
                                                                 "coco/bbox_mAP_50": 20.0}
            results[f"det-d2-{transfer_slug(r)}-s{s}"] = {"bbox/AP": 11.0 + k, "bbox/AP50": 21.0}
            results[f"seg-mmseg-{transfer_slug(r)}-s{s}"] = {"mIoU": 30.0 - k, "aAcc": 80.0}
    for s in p.transfer_seeds:
        results[f"det-d2-{transfer_slug(RANDOM_ROW)}-s{s}"] = {"bbox/AP": 5.0, "bbox/AP50": 9.0}
    write_report(tmp_path, p, results, {"command": "c", "machine": "m", "wall_time": "1 min"})
    md = (tmp_path / "report.md").read_text()
    assert "| + cosine @32 | 62.00 | n/a | 13.00 | 28.00 |" in md  # MMDetection did not run this row
    assert "| + label smoothing @32 | 63.00 | 13.10 | 14.00 | 27.00 |" in md  # means over detector seeds
    # the segmentation table's Δ is of mIoU (pixel accuracy is flat here), and so is the paper's
    assert "| Δ mIoU | vs |" in md
    assert ("| D-efficient @32 | 80.00 ± 0.00 | 29.00 ± 0.00 | -1.00 ± 0.00 (3/3) | B-standard @8 | 78.88 / 38.88 "
            "| +1.83 |" in md)
    # + distillation adds the teacher to label smoothing's row, not to the mixup row above it
    assert "| + distillation @32 | 80.00 ± 0.00 | 25.00 ± 0.00 | -2.00 ± 0.00 (3/3) | + label smoothing @32 |" in md
    assert ("MMDet mAP ρ = +1.00 (3 rows), Detectron2 AP ρ = +1.00 (6 rows), FCN mIoU ρ = -1.00 (6 rows)" in md)
    # the paper's rows among them: top-1 ranks 1..5 in row order, mIoU ranks (1, 4, 5, 2, 3): 1 - 6*16/120 = +0.20
    assert "(the paper's rows among them: +1.00, +1.00, +0.20)" in md
    assert (tmp_path / "transfer_vs_top1.png").stat().st_size > 1000


def test_report_names_the_commit_the_stages_ran_at(tmp_path):
    from plugins.reproduce.cli import source_commit

    p = get_preset("quick")
    write_report(tmp_path, p, {}, {"command": "c", "machine": "m", "wall_time": "1 min", "commit": "f0d2501"})
    assert "Command: `c` at commit f0d2501  " in (tmp_path / "report.md").read_text()
    write_report(tmp_path, p, {}, {"command": "c", "machine": "m", "wall_time": "1 min"})  # older results.json
    assert "Command: `c`  " in (tmp_path / "report.md").read_text()
    commit = source_commit()  # this checkout: a short hash, perhaps with "+ uncommitted changes"
    assert commit is None or len(commit.split()[0]) >= 7



def test_stacked_deltas_are_against_the_row_each_adds_one_trick_to(tmp_path):
    """"+ mixup" is label smoothing's row plus mixup (no teacher): its Δ, and the paper's, are against
    "+ label smoothing", not the distillation row above it; "+ distillation + mixup" is against "+ mixup"."""
    p = get_preset("full")
    top1 = {"B-standard": 70.0, "D-efficient": 71.0, "+ cosine": 72.0, "+ label smoothing": 73.0,
            "+ distillation": 75.0, "+ mixup": 72.5, "+ distillation + mixup": 74.0}
    results = {}
    for i, s in enumerate(p.seeds):
        for r, v in top1.items():
            results[cls_stage_name(r, s)] = {"val_top1": v + 0.1 * i, "curve": [v]}
        for v in TWEAK_ROWS:
            results.setdefault(f"cls-tweak-{v}-s{s}", {"val_top1": 71.0 + 0.1 * i})
    write_report(tmp_path, p, results, {"command": "c", "machine": "m", "wall_time": "1 min"})
    md = (tmp_path / "report.md").read_text()
    assert "| + mixup | 72.60 ± 0.10 | -0.50 ± 0.00 (3/3) | + label smoothing | 79.15 | +0.84 |" in md
    assert "| + distillation | 75.10 ± 0.10 | +2.00 ± 0.00 (3/3) | + label smoothing | 78.67 | +0.36 |" in md
    assert ("| + distillation + mixup | 74.10 ± 0.10 | +1.50 ± 0.00 (3/3) | + mixup | 79.29 | +0.14 |" in md)


def test_block_times_give_stage_and_machine_time_per_block(tmp_path):
    """Per block: summed stage wall minutes, CPU minutes over the machine's cores (what pauses do not inflate, and
    two one-core detectors side by side count once), and how many stages resumed; a total row sums them."""
    p = get_preset("quick")
    records = {"cls-tweak-A-s0": (120.0, 240.0, False), "cls-tweak-B-s0": (60.0, 120.0, True),  # 2 threads each
               "det-d2-B-standard-e2-s0": (300.0, 294.0, False), "det-d2-B-standard-e2-s1": (300.0, 306.0, False)}
    results = {}
    for name, (seconds, cpu, resumed) in records.items():
        (tmp_path / "stages" / f"{name}-k").mkdir(parents=True)
        (tmp_path / "stages" / f"{name}-k" / "stage.json").write_text(
            json.dumps({"seconds": seconds, "cpu_seconds": cpu, "resumed": resumed}))
        results[name] = {"val_top1": 50.0} if name.startswith("cls") else {"bbox/AP": 1.0}
    write_report(tmp_path, p, results, {"command": "c", "machine": "m", "wall_time": "1 min", "cores": 2})
    md = (tmp_path / "report.md").read_text()
    assert "| classification: base tables and teacher | 2 | 3.0 | 3.0 | 1 |" in md
    assert "| transfer: Detectron2 | 2 | 10.0 | 5.0 | 0 |" in md  # two one-core stages side by side: 5 min
    assert "| all | 4 | 13.0 | 8.0 (0.13 h) | 1 |" in md
    assert "transfer: MMDetection" not in md.split("### Time of each block")[1]  # no stage, no row
    write_report(tmp_path, p, results, {"command": "c", "machine": "m", "wall_time": "1 min", "cores": 4})
    assert "| transfer: Detectron2 | 2 | 10.0 | 2.5 | 0 |" in (tmp_path / "report.md").read_text()
    # the records travel in results.json: --report-only gives the same table where the stage folders are gone
    import shutil

    from plugins.reproduce.cli import main

    shutil.rmtree(tmp_path / "stages")
    assert main(["--preset", "quick", "--out", str(tmp_path), "--report-only"]) == 0
    assert "| all | 4 | 13.0 | 4.0 (0.07 h) | 1 |" in (tmp_path / "report.md").read_text()


def test_block_times_without_records_read_na(tmp_path):
    """A run whose stages left no record (a results.json of an older version, its folders elsewhere) says n/a, not
    a total of zero."""
    results = {"cls-tweak-A-s0": {"val_top1": 50.0}, "det-d2-B-standard-e2-s0": {"bbox/AP": 1.0}}
    write_report(tmp_path, get_preset("quick"), results, {"command": "c", "machine": "m", "wall_time": "1 min"})
    md = (tmp_path / "report.md").read_text()
    assert "| transfer: Detectron2 | 1 | n/a | n/a | 0 |" in md and "| all | 2 | n/a | n/a | 0 |" in md


def test_only_writes_the_tables_of_its_stages_beside_the_full_report(tmp_path, monkeypatch, capsys):
    """--only GLOB runs those stages and writes their tables to <run>/partial/report.md, saying it is partial; the
    full run's report.md stays as it was."""
    from plugins.reproduce import cli
    from plugins.reproduce.pipeline import Stage

    top1 = {v: 80.0 + i for i, v in enumerate(TWEAK_ROWS)}
    stages = [Stage(f"cls-tweak-{v}-s0", ["-c", "0"], parse=lambda out, v=v: {"val_top1": top1[v]})
              for v in TWEAK_ROWS]
    stages.append(Stage("cls-B-standard-s0", ["-c", "raise SystemExit('must not run')"]))
    monkeypatch.setattr(cli, "build_stages", lambda preset, run_dir: stages)
    monkeypatch.setattr(cli, "lr_trace_stages", lambda *a: [])
    (tmp_path / "report.md").write_text("the full run's report")
    assert cli.main(["--preset", "quick", "--out", str(tmp_path), "--only", "cls-tweak-*"]) == 0
    md = (tmp_path / "partial" / "report.md").read_text()
    assert "Partial: only the stages matching `cls-tweak-*` and those they need (4 stages)" in md
    assert "| D | 83.00 | +1.00 | C |" in md
    assert (tmp_path / "report.md").read_text() == "the full run's report"
    assert "partial/report.md" in capsys.readouterr().out
