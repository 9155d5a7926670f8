"""How long the study's stages ran: each stage's run-time record (``stage.json``: wall and CPU seconds, resumed or
not), their sums, and the report's "Time of each block" table."""

from __future__ import annotations

import json
import re
from pathlib import Path


def stage_records(run_dir: Path, names, stage_dirs: dict[str, Path] | None = None) -> dict[str, dict]:
    """Each named stage's run time as its ``stage.json`` records it: ``seconds`` (wall), ``cpu_seconds`` and
    ``resumed`` (a resumed stage counts from its resume); {} for a stage without a record."""
    keys = ("seconds", "cpu_seconds", "resumed")
    return {name: {k: v for k, v in stage_record(run_dir, name, stage_dirs).items() if k in keys} for name in names}


def stage_seconds(records: dict[str, dict], names, key: str = "seconds") -> float | None:
    """Sum of the recorded run times (``key``: "seconds", wall, or "cpu_seconds") of the named stages, over every
    invocation that ran one of them; None if a stage has no record."""
    try:
        return sum(float(records[name][key]) for name in names)
    except (KeyError, TypeError, ValueError):
        return None


def stage_record(run_dir: Path, name: str, stage_dirs: dict[str, Path] | None = None) -> dict:
    """The newest ``stage.json`` of a finished stage (its folder from ``stage_dirs`` when given), or {}."""
    if stage_dirs is not None:
        markers = [stage_dirs[name] / "stage.json"]
    else:
        markers = sorted(Path(run_dir, "stages").glob(f"{name}-*/stage.json"), key=lambda p: p.stat().st_mtime)
    try:
        return json.loads(markers[-1].read_text())
    except (IndexError, OSError, ValueError):
        return {}


# Blocks of the study, by stage-name prefix, for the time each took
_BLOCKS = [("classification: base tables and teacher",
            lambda n: n.startswith("cls-") and not re.search(r"-e\d+-s\d+$", n)),
           ("classification: ladder and efficient-training budgets", lambda n: n.startswith("cls-")),
           ("transfer: MMDetection", lambda n: n.startswith("det-mmdet-")),
           ("transfer: Detectron2", lambda n: n.startswith("det-d2-")),
           ("transfer: MMSegmentation", lambda n: n.startswith("seg-mmseg-")),
           ("detection ablation (Bag of Freebies)", lambda n: n.startswith("detab-")),
           ("data and lr traces", lambda n: True)]


def block_of(name: str) -> str:
    return next(title for title, match in _BLOCKS if match(name))


def block_times_section(records: dict[str, dict], results: dict, cores: int = 2) -> str:
    """Per block: its stages' summed wall seconds (over every invocation), and the machine time it needs, their
    CPU seconds over the machine's ``cores``. The second does not grow with pauses or other work on the machine,
    and counts the one-core detector stages that ran two at a time by their share of the cores; its total is the
    wall time of the study on ``cores`` cores kept busy. A stage resumed after an interruption counts from its
    resume; the table says how many were. A time without a record for every stage reads n/a."""
    def minutes(seconds: float | None, per: int = 1) -> str:
        return "n/a" if seconds is None else f"{seconds / per / 60:.1f}"

    rows = []
    for title, _ in _BLOCKS:
        names = [n for n in sorted(results) if block_of(n) == title]
        if names:
            resumed = sum(1 for n in names if records.get(n, {}).get("resumed"))
            rows.append(f"| {title} | {len(names)} | {minutes(stage_seconds(records, names))} | "
                        f"{minutes(stage_seconds(records, names, 'cpu_seconds'), cores)} | {resumed} |")
    if not rows:
        return ""
    names = sorted(results)
    cpu = stage_seconds(records, names, "cpu_seconds")
    resumed = sum(1 for n in names if records.get(n, {}).get("resumed"))
    rows.append(f"| all | {len(names)} | {minutes(stage_seconds(records, names))} | {minutes(cpu, cores)}"
                + ("" if cpu is None else f" ({cpu / cores / 3600:.2f} h)") + f" | {resumed} |")
    return "\n".join(["### Time of each block", "",
                      "Stage time: the block's stages' wall minutes, summed over every invocation (the one-core "
                      "detector and segmenter stages ran two at a time). Machine time: their CPU minutes over the "
                      f"{cores} cores, which pauses do not add to; the total is the study's wall time on a machine "
                      f"kept busy. Resumed: stages interrupted and resumed, counted from their resume.", "",
                      "| block | stages | stage time (min) | machine time (min) | resumed |", "|---|---|---|---|---|",
                      *rows]) + "\n"
