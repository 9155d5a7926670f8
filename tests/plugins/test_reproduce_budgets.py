"""The budget sections of the study's report: the ladder (paired Δ per trick per budget beside the train-val gap
and calibration error), efficient training at equal epochs, equal updates and equal time, time to a target, the
reading, excluded runs; computed by hand from fabricated per-epoch records."""

import pytest

from plugins.reproduce.budgets import collect_efficient, efficient_comparisons, updates_per_epoch, verdict
from plugins.reproduce.presets import get_preset
from plugins.reproduce.report import write_report
from plugins.reproduce.study import EFFICIENT_PAIR, LADDER_ROWS, budget_stage_name

GAIN = {"D-efficient": 0.0, "+ cosine": 1.0, "+ label smoothing": 1.5, "+ mixup": 1.0, "+ distillation": 3.0}


def _record(top1, epochs, epoch_s, clean_gap, ece):
    return {"val_top1": top1, "curve": [top1], "per_epoch": {
        "eval_top1": [top1], "train_clean_top1": [top1 + clean_gap], "eval_ece": [ece],
        "epoch_time": [epoch_s] * epochs, "epoch_cpu_time": [2 * epoch_s] * epochs}}


def fabricated(p):
    """Tricks that lose at 8 epochs and gain from 16 on (mixup the reverse); a gap that grows with the budget;
    the efficient setting 6 points below the baseline at equal epochs and 2.5x faster per epoch."""
    results = {}
    for epochs, seeds in p.ladder:
        for row in LADDER_ROWS:
            for s in seeds:
                top1 = 70 + epochs / 4 + GAIN[row] * (epochs - 12) / 10 + 0.1 * s
                results[budget_stage_name(p, row, s, epochs)] = _record(top1, epochs, 10.0, epochs / 2, 5 - GAIN[row])
    for epochs, seeds in p.standard_budgets:
        for setting, row in EFFICIENT_PAIR.items():
            for s in seeds:
                top1 = (60 if setting == "efficient" else 66) + epochs / 2 + 0.2 * s
                results[budget_stage_name(p, row, s, epochs)] = _record(
                    top1, epochs, 25.0 if setting == "baseline" else 10.0, 3.0, 2.0)
    return results


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    p = get_preset("full")
    out = tmp_path_factory.mktemp("report")
    meta = {"command": "c", "machine": "m", "wall_time": "1 min", "low_precision": True,
            "excluded": {"cls-mixup-e32-s2": "failed (exit 2): tricks-train: error: non-finite loss"}}
    write_report(out, p, fabricated(p), meta)
    return p, out, (out / "report.md").read_text()


def test_ladder_table_pairs_each_trick_with_its_row_per_budget(report):
    _, out, md = report
    # cosine - D-efficient = 1.0 * (epochs - 12) / 10: -0.40 at 8, +0.40 at 16, +2.00 at 32, the same on every seed
    assert ("| + cosine (vs D-efficient) | -0.40 ± 0.00 (3/3) | +0.40 ± 0.00 (2/2) | +2.00 ± 0.00 (3/3) | hurts | "
            "pays | pays |") in md
    # distillation is added to label smoothing's row: (3.0 - 1.5) * (epochs - 12) / 10
    assert "| + distillation (vs + label smoothing) | -0.60 ± 0.00 (3/3) | +0.60 ± 0.00 (2/2) | +3.00 ± 0.00 (3/3) |" in md
    # top-1, the gap (clean train top-1 - val top-1 = epochs / 2) and ECE per budget
    assert "| D-efficient | 72.10 ± 0.10 | 4.00 ± 0.00 | 5.00 ± 0.00 | 74.05 ± 0.07 | 8.00 ± 0.00 |" in md
    assert "- mixup (on + label smoothing): 8 ep +0.20 (pays); 16 ep -0.20 (hurts); 32 ep -1.00 (hurts)." in md
    assert (out / "ladder.png").stat().st_size > 1000


def test_efficient_training_at_equal_epochs_updates_and_time(report):
    p, out, md = report
    assert updates_per_epoch(p, "baseline") == 10000 // 32 and updates_per_epoch(p, "efficient") == 10000 // 128
    # baseline 8 ep: 312 x 8 = 2496 updates; efficient 32 ep: 78 x 32 = 2496, the equal-updates pair
    assert "| baseline | 8 | 2496 | 200 ± 0 | 399 ± 0 | 70.20 ± 0.20 | 2.00 ± 0.00 |" in md
    assert "| efficient | 32 | 2496 | 320 | 998 | 76.00 | 2.00 |" in md
    assert "| equal updates | 8 ep | 32 ep | +6.00 (1 seed) |" in md
    assert "| equal epochs | 8 ep | 8 ep | -6.00 ± 0.00 (3/3) |" in md
    # 8 baseline epochs take 200 s; the efficient run nearest in time is 16 epochs (160 s), within 35 %
    assert "| nearest equal time | 8 ep (200 s) | 16 ep (160 s) | -2.00 ± 0.00 (2/2) |" in md
    assert "| nearest equal time | 32 ep" not in md, "no efficient run is near 800 s: no pair"
    assert "baseline 200 s (8 ep), efficient 320 s (32 ep)." in md
    assert (out / "efficient_training.png").stat().st_size > 1000


def test_excluded_runs_are_named_with_their_reason(report):
    _, _, md = report
    assert "| cls-mixup-e32-s2 | failed (exit 2): tricks-train: error: non-finite loss |" in md


def test_a_complete_run_says_nothing_was_excluded(tmp_path):
    p = get_preset("quick")
    write_report(tmp_path, p, fabricated(p), {"command": "c", "machine": "m", "wall_time": "1 min"})
    assert "None: every stage of this run finished" in (tmp_path / "report.md").read_text()


def test_time_to_target_is_none_when_no_budget_reaches_it():
    p = get_preset("full")
    results = fabricated(p)
    for (epochs, seeds) in p.standard_budgets:
        for s in seeds:
            results[budget_stage_name(p, "tweak-B", s, epochs)]["val_top1"] = 10.0
    comp = efficient_comparisons(collect_efficient(results, p), p)
    assert comp["time_to_target"]["efficient"] is None and comp["time_to_target"]["baseline"][1] == 8


def test_verdict_needs_every_seed():
    assert verdict([0.1, 0.2]) == "pays" and verdict([-0.1, -0.3, -0.2]) == "hurts"
    assert verdict([0.5, -0.1]) == "no clear sign" and verdict([1.0]) == "one seed"
    assert verdict([]) == "n/a"  # a budget whose runs are missing is not "one seed"


def test_a_paused_epoch_moves_neither_training_time_nor_speed(tmp_path):
    """Training time is CPU time and images/s is over the median epoch: an epoch that waited 1,000 s (a paused
    study) leaves both as they were."""
    p = get_preset("full")
    results = fabricated(p)
    results[budget_stage_name(p, EFFICIENT_PAIR["baseline"], 0, 8)]["per_epoch"]["epoch_time"][3] = 1000.0
    write_report(tmp_path, p, results, {"command": "c", "machine": "m", "wall_time": "1 min", "low_precision": True})
    assert "| baseline | 8 | 2496 | 200 ± 0 | 399 ± 0 | 70.20 ± 0.20 | 2.00 ± 0.00 |" in (tmp_path / "report.md").read_text()
