"""results.json, report.md and PNG figures from the stages' metrics."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from plugins.runtime.lr_record import read_lr_record

from . import budgets, reference, timing
from .study import (
    DET_ABLATION_ROWS,
    RANDOM_ROW,
    STACKED_ROWS,
    TWEAK_ROWS,
    cls_stage_name,
    det_ablation_stage_name,
    transfer_rows,
    transfer_slug,
)

_DATASET_NAMES = {"fashion_photos": "fashion photos (Fashion-MNIST items on photo crops)",
                  "fashion_mnist": "Fashion-MNIST"}


def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _cell(values: list[float]) -> str:
    mean, sd = _stats(values)
    return f"{mean:.2f} ± {sd:.2f}" if len(values) > 1 else f"{mean:.2f}"


def collect(results: dict[str, dict], preset) -> dict:
    """Per-table, per-row lists of the metric over seeds (the transfer tables: over the detector seeds)."""
    seeds, transfer_seeds = list(preset.seeds), list(preset.transfer_seeds)
    labels = list(transfer_rows(preset))

    def over_seeds(fmt, key, over=seeds):
        vals = [results[fmt.format(s=s)].get(key) for s in over if fmt.format(s=s) in results]
        return [v for v in vals if v is not None and not math.isnan(v)]

    def transfer(prefix, keys):
        return {r: {name: over_seeds(f"{prefix}-{transfer_slug(r)}-s{{s}}", key, transfer_seeds)
                    for name, key in keys.items()} for r in labels}

    tables = {
        "model_tweaks": {v: {"top1": over_seeds(f"cls-tweak-{v}-s{{s}}", "val_top1")} for v in TWEAK_ROWS},
        "stacked": {r: {"top1": [results[cls_stage_name(r, s)]["val_top1"] for s in seeds
                                 if cls_stage_name(r, s) in results]} for r in STACKED_ROWS},
        "detection_mmdet": transfer("det-mmdet", {"mAP": "coco/bbox_mAP", "mAP50": "coco/bbox_mAP_50"}),
        "detection_d2": transfer("det-d2", {"mAP": "bbox/AP", "mAP50": "bbox/AP50"}),
        "segmentation_mmseg": transfer("seg-mmseg", {"pixel_acc": "aAcc", "mIoU": "mIoU"}),
    }
    tables["teacher"] = {"teacher": {"top1": [results[f"cls-teacher-s{s}"]["val_top1"] for s in seeds
                                              if f"cls-teacher-s{s}" in results]}}
    tables["detection_mmdet"] = {r: v for r, v in tables["detection_mmdet"].items()
                                 if r == RANDOM_ROW or _paper_row(r) in preset.mmdet_transfer_rows}
    return tables


def _delta(cur: list[float], prev: list[float]) -> str:
    """Δ of a row against its base row. With several seeds, both lists per seed (same order): the mean and
    standard deviation of the per-seed differences, and on how many seeds the difference has the mean's sign."""
    if not cur or not prev:
        return ""
    if len(cur) == 1 or len(cur) != len(prev):
        return f"{_stats(cur)[0] - _stats(prev)[0]:+.2f}"
    diffs = [a - b for a, b in zip(cur, prev, strict=True)]
    mean, sd = _stats(diffs)
    agree = sum(1 for d in diffs if (d > 0) == (mean > 0) and d != 0)
    return f"{mean:+.2f} ± {sd:.2f} ({agree}/{len(diffs)})"


# The row each stacked row adds one trick to, where it is not the row above: "+ mixup" is label smoothing's row
# plus mixup (no teacher), "+ distillation + mixup" is "+ mixup" plus the teacher. Every Δ, ours and the paper's,
# is against this row.
BASE_ROW = {"+ mixup": "+ label smoothing", "+ distillation": "+ label smoothing",
            "+ distillation + mixup": "+ mixup"}


def _paper_row(label: str) -> str:
    """The paper's row of a row label with a budget ("+ cosine @32" -> "+ cosine")."""
    return label.rpartition(" @")[0] or label


def _base_of(name: str, names: list[str], i: int) -> str | None:
    """The row ``name`` adds one trick to: ``BASE_ROW``'s (with the same budget suffix), else the row above."""
    row = _paper_row(name)
    base = BASE_ROW.get(row)
    if base is not None and base + name[len(row):] in names:
        return base + name[len(row):]
    return names[i - 1] if i else None


def _table(title, rows, metric_cols, ref=None, ref_fmt=None, delta_key=None):
    """A markdown table of ``rows``; Δ is of ``delta_key`` (default: the first metric) against the row each row
    adds one trick to (``BASE_ROW``, else the row above), named in the "vs" column."""
    delta_key = delta_key or metric_cols[0][0]
    head = ["row", *[f"ours: {m}" for m, _ in metric_cols],
            "Δ" if delta_key == metric_cols[0][0] else f"Δ {delta_key}", "vs"]
    if ref is not None:
        head += ["paper", "paper Δ"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = list(rows)
    for i, name in enumerate(names):
        vals = rows[name]
        base = _base_of(name, names, i)
        cells = [name] + [(_cell(vals[k]) if vals[k] else "n/a") for k, _ in metric_cols]
        cells += ["" if base is None else _delta(vals[delta_key], rows[base][delta_key]), base or ""]
        if ref is not None:
            r, rb = ref.get(_paper_row(name)), ref.get(_paper_row(base)) if base else None
            rv = r[ref_fmt] if isinstance(r, tuple) else r
            bv = rb[ref_fmt] if isinstance(rb, tuple) else rb
            cells += ["" if r is None else (" / ".join(f"{x:.2f}" for x in r) if isinstance(r, tuple) else f"{r:.2f}"),
                      "" if bv is None or rv is None else f"{rv - bv:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _transfer_caveat(preset) -> str:
    seeds = list(preset.transfer_seeds)
    if preset.det_iters < 200:
        return (f"**At this scale the transfer runs are too short to rank backbones** ({preset.det_iters} iterations "
                "from a backbone trained for minutes): they show that every exported backbone loads and trains "
                "end to end in each framework. The `full` preset is the measurement.")
    if len(seeds) < 2:
        return (f"Transfer rows are one detector or segmenter run per backbone (detector seed {seeds}): no spread is "
                "measured for them, so small differences there are not evidence either way.")
    return (f"Transfer rows are mean ± sd over detector / segmenter seeds {seeds}, every run transferring the "
            f"backbones of classification seed {preset.seeds[0]}; Δ is paired over those seeds. The "
            "`random init (D)` row is the control: the same detector from a randomly initialised ResNet-D, so the "
            "next row's Δ is what transfer itself is worth here.")


# (table, metric, column title) of the transfer columns compared with the backbones' top-1
TRANSFER_METRICS = [("detection_mmdet", "mAP", "MMDet mAP"), ("detection_d2", "mAP", "Detectron2 AP"),
                    ("segmentation_mmseg", "mIoU", "FCN mIoU")]


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None with fewer than 3 pairs or a constant side."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return statistics.correlation(ranks(x), ranks(y))


def transfer_vs_top1(tables: dict, results: dict, preset) -> dict:
    """Per pre-trained backbone: its classification top-1 (the first seed's, the backbone every transfer run
    used) and the mean transfer metrics, with Spearman's ρ of top-1 against each over the rows a table has; the
    paper's ρ over its rows that are among them."""
    rows = {label: src for label, (src, _) in transfer_rows(preset).items() if src is not None}
    out = {"rows": {}, "rho": {}, "paper_rho": {}, "n": {}}
    for r, src in rows.items():
        top1 = results.get(src, {}).get("val_top1")
        values = {title: _stats(tables[t][r][m])[0] if tables[t].get(r, {}).get(m) else None
                  for t, m, title in TRANSFER_METRICS}
        out["rows"][r] = {"top1": top1, **values}
    for t, _, title in TRANSFER_METRICS:
        pairs = [(v["top1"], v[title]) for v in out["rows"].values() if v["top1"] is not None and v[title] is not None]
        out["rho"][title] = spearman([a for a, _ in pairs], [b for _, b in pairs])
        out["n"][title] = len(pairs)
        paper_map = reference.DETECTION_MAP if t.startswith("detection") else {
            k: v[1] for k, v in reference.SEGMENTATION.items()}
        known = [_paper_row(r) for r, v in out["rows"].items() if v[title] is not None and _paper_row(r) in paper_map]
        out["paper_rho"][title] = spearman([reference.STACKED_TOP1[r] for r in known], [paper_map[r] for r in known])
    return out


def _transfer_vs_top1_section(data: dict, seed: int) -> str:
    titles = [title for _, _, title in TRANSFER_METRICS]
    lines = [f"### Does the better classifier transfer better? (backbones of seed {seed})", "",
             "| backbone | top-1 | " + " | ".join(titles) + " |", "|---|---|" + "---|" * len(titles)]
    for r, v in data["rows"].items():
        cells = [f"{v[t]:.2f}" if v[t] is not None else "n/a" for t in ["top1", *titles]]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")

    def rho(x):
        return "n/a" if x is None else f"{x:+.2f}"

    lines += ["", "Spearman's rank correlation of top-1 with each transfer metric over the backbones it has: "
              + ", ".join(f"{t} ρ = {rho(data['rho'][t])} ({data['n'][t]} rows)" for t in titles)
              + " (the paper's rows among them: " + ", ".join(f"{rho(data['paper_rho'][t])}" for t in titles)
              + "). With n backbones ρ moves in steps of 6/(n³-n); only ±1 or near it says much.", ""]
    return "\n".join(lines)



def write_report(run_dir: Path, preset, results: dict[str, dict], meta: dict,
                 stage_dirs: dict[str, Path] | None = None) -> Path:
    seeds = list(preset.seeds)
    if "stage_records" not in meta:  # kept in results.json, so that --report-only has them without the stages
        meta = {**meta, "stage_records": timing.stage_records(run_dir, sorted(results), stage_dirs)}
    if "stage_time" not in meta:
        spent = timing.stage_seconds(meta["stage_records"], sorted(results))
        cpu = timing.stage_seconds(meta["stage_records"], sorted(results), key="cpu_seconds")
        meta = {**meta, "stage_time": None if spent is None else f"{spent / 60:.1f} min",
                "stage_cpu_time": None if cpu is None else f"{cpu / 3600:.2f} h"}
    tables = collect(results, preset)
    tables.update(collect_det_ablation(results, list(preset.transfer_seeds)))
    tables["budget_ladder"] = budgets.collect_ladder(results, preset)
    tables["budget_efficient"] = budgets.collect_efficient(results, preset)
    out = {"preset": preset.to_dict(), "meta": meta, "tables": tables, "stages": results}
    tmp = run_dir / "results.json.tmp"
    tmp.write_text(json.dumps(out, indent=2, sort_keys=True))
    os.replace(tmp, run_dir / "results.json")
    from .figures import bar_charts, transfer_scatter  # figures.py reads this module's helpers

    figures = bar_charts(run_dir, tables, results, seeds)
    figures += transfer_scatter(run_dir, transfer_vs_top1(tables, results, preset), tables, seeds[0])
    figures += budgets.figures(run_dir, tables["budget_ladder"], tables["budget_efficient"], preset)
    spread = "mean ± standard deviation over seeds " + str(seeds) if len(seeds) > 1 else f"one seed ({seeds[0]})"
    md = [f"# Bag of tricks, reproduced small: preset `{preset.name}`", "",
          f"Command: `{meta['command']}`" + (f" at commit {meta['commit']}" if meta.get("commit") else "") + "  ",
          f"Machine: {meta['machine']}  ",
          f"Wall time: {meta['wall_time']} (this invocation)"
          + (f"; stage time, all invocations: {meta['stage_time']}" if meta.get("stage_time") else "")
          + (f" (CPU time of the stages' processes: {meta['stage_cpu_time']}, which pauses and other work on "
             "the machine do not add to)" if meta.get("stage_cpu_time") else "") + "  ",
          *([f"Partial: only the stages matching `{meta['only']}` and those they need ({len(results)} stages); "
             "the tables of the others read n/a.  "] if meta.get("only") else []),
          f"Figures are {spread}. Classification: {_DATASET_NAMES.get(preset.dataset, preset.dataset)}, "
          f"{preset.img_size} px, val top-1 (%) of `{preset.model}*` "
          f"({preset.epochs} epochs, {preset.train_subset or 60000} train / {preset.val_subset or 10000} val images). "
          f"Transfer: fashion scenes ({preset.scenes_train} train / {preset.scenes_val} val, {preset.scene_size} px), "
          f"{preset.det_iters} detector and {preset.seg_iters} segmenter iterations at batch {preset.transfer_batch}, "
          f"lr {preset.transfer_lr} (detector seeds {list(preset.transfer_seeds)}, backbones of seed "
          f"{preset.seeds[0]}). "
          "The paper's figures are ImageNet / VOC / ADE20K with ResNet-50: compare directions, not levels.",
          *(["With several seeds, Δ is the mean ± standard deviation of the per-seed differences and, in "
             "brackets, on how many seeds the difference has the sign of the mean."] if len(seeds) > 1 else []),
          _transfer_caveat(preset),
          "",
          _table("Model tweaks (same efficient recipe)", tables["model_tweaks"], [("top1", "top-1")],
                 reference.MODEL_TWEAKS_TOP1),
          _table("Stacked refinements", tables["stacked"], [("top1", "top-1")], reference.STACKED_TOP1),
          f"Distillation teacher `{preset.teacher_model}d` (cosine + label smoothing, {preset.teacher_epochs} "
          f"epochs): top-1 {_cell(tables['teacher']['teacher']['top1']) if tables['teacher']['teacher']['top1'] else 'n/a'}.",
          "",
          budgets.efficient_section(tables["budget_efficient"], preset, bool(meta.get("low_precision"))),
          budgets.ladder_section(tables["budget_ladder"], preset),
          _table("Transfer: Faster R-CNN, MMDetection (box mAP %, COCO-style 0.5:0.95)", tables["detection_mmdet"],
                 [("mAP", "mAP"), ("mAP50", "mAP@0.5")], reference.DETECTION_MAP),
          _table("Transfer: Faster R-CNN, Detectron2 (box AP %, COCO-style 0.5:0.95)", tables["detection_d2"],
                 [("mAP", "AP"), ("mAP50", "AP50")], reference.DETECTION_MAP),
          _table("Transfer: FCN, MMSegmentation (pixel accuracy %, mIoU %)", tables["segmentation_mmseg"],
                 [("pixel_acc", "pixel acc"), ("mIoU", "mIoU")], reference.SEGMENTATION, 1, delta_key="mIoU"),
          *det_ablation_section(tables, preset),
          _transfer_vs_top1_section(transfer_vs_top1(tables, results, preset), preset.seeds[0]),
          budgets.reading(tables["budget_ladder"], tables["budget_efficient"], preset,
                          {"tables": tables, "metrics": TRANSFER_METRICS}),
          _excluded_section(meta.get("excluded") or {}),
          timing.block_times_section(meta["stage_records"], results, meta.get("cores") or 2),
          "## Figures", ""]
    md += [f"![{name}]({name})" for name in figures]
    (run_dir / "report.md.tmp").write_text("\n".join(md) + "\n")
    os.replace(run_dir / "report.md.tmp", run_dir / "report.md")
    return run_dir / "report.md"


def _excluded_section(excluded: dict) -> str:
    """The stages that failed or diverged and what was left out with them: nothing is dropped silently."""
    if not excluded:
        return ("### Excluded runs\n\nNone: every stage of this run finished and every figure above is from "
                "all its seeds.\n")
    lines = ["### Excluded runs", "", "These stages failed (a non-finite loss is a failure) or needed one that did; "
             "their rows show n/a or fewer seeds above.", "", "| stage | why |", "|---|---|"]
    lines += [f"| {name} | {why.replace('|', '/')} |" for name, why in sorted(excluded.items())]
    return "\n".join(lines) + "\n"



_DET_ABLATION_METRICS = {"mmdet": ("MMDetection", {"mAP": "coco/bbox_mAP", "mAP50": "coco/bbox_mAP_50"}),
                         "d2": ("Detectron2", {"mAP": "bbox/AP", "mAP50": "bbox/AP50"})}


def collect_det_ablation(results: dict[str, dict], transfer_seeds) -> dict:
    """``{"detection_ablation_<framework>": {row: {metric: [over seeds]}}}`` for the frameworks that ran it."""
    tables = {}
    for framework, (_, keys) in _DET_ABLATION_METRICS.items():
        rows = {row: {name: [results[det_ablation_stage_name(framework, row, s)][key] for s in transfer_seeds
                             if key in results.get(det_ablation_stage_name(framework, row, s), {})]
                      for name, key in keys.items()} for row in DET_ABLATION_ROWS}
        if any(vals["mAP"] for vals in rows.values()):
            tables[f"detection_ablation_{framework}"] = rows
    return tables


def det_ablation_section(tables: dict, preset) -> list[str]:
    """The Bag of Freebies ablation's tables (one per framework that ran it), or nothing."""
    out = []
    for framework, (title, _) in _DET_ABLATION_METRICS.items():
        rows = tables.get(f"detection_ablation_{framework}")
        if rows:
            out.append(_table(f"Detection tricks (Bag of Freebies): Faster R-CNN, {title}, D-efficient backbone "
                              "(box mAP %, COCO-style 0.5:0.95)", rows, [("mAP", "mAP"), ("mAP50", "mAP@0.5")],
                              reference.DETECTION_FREEBIES_MAP))
    if out:
        out.append("Each row adds one detector trick to the row above (detection mixup: alpha 1.5, per-box loss "
                   "weights); the fixed 0.5 blend replaces the Beta draws of the row above it, as GluonCV and "
                   "MMDetection's MixUp blend. The paper column is Zhang et al. 2019's Faster R-CNN on VOC 2007 as "
                   "ANCHORS.md records it from memory (not checked against the paper).\n")
    return out


def read_lr_csv(path: Path) -> tuple[list[int], list[float]]:
    """(steps, lr of the first param group) from an adapter's lr_per_step.csv."""
    steps, lrs = read_lr_record(path)
    return steps, lrs[0]
