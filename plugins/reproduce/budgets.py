"""The study's budget sections: the ladder (where each trick starts to pay, beside the train-val gap) and efficient
training against seconds and updates (equal epochs, equal updates, equal time, time to a target accuracy).

Every figure is read from the classification stages' ``per_epoch`` records (timm's summary.csv): the last
epoch's validation top-1 and calibration error, the clean top-1 of the fixed training subset, and the sums of the
epochs' wall and CPU seconds. Deltas are paired per seed, over the seeds both rows have.
"""

from __future__ import annotations

import statistics

from . import reference
from .study import EFFICIENT_PAIR, LADDER_ROWS, budget_stage_name, recipes

# The trick each ladder row adds, and the row it adds it to
LADDER_TRICKS = {"+ cosine": "D-efficient", "+ label smoothing": "+ cosine", "+ mixup": "+ label smoothing",
                 "+ distillation": "+ label smoothing"}


def _last(per_epoch: dict, column: str) -> float | None:
    values = [v for v in per_epoch.get(column) or [] if v is not None]
    return values[-1] if values else None


# one colour per row in both panels of ladder.png (a trick's Δ takes the colour of the row that adds it)
_COLOURS = {"D-efficient": "#7f7f7f", "+ cosine": "#1f77b4", "+ label smoothing": "#ff7f0e", "+ mixup": "#2ca02c",
            "+ distillation": "#d62728"}


def run_figures(stage: dict) -> dict | None:
    """top-1, train-val gap, calibration error, and training seconds (wall, CPU) of one classification stage."""
    per_epoch = stage.get("per_epoch") or {}
    top1 = stage.get("val_top1")
    if top1 is None:
        return None
    clean = _last(per_epoch, "train_clean_top1")
    wall = [v for v in per_epoch.get("epoch_time") or [] if v is not None]
    cpu = [v for v in per_epoch.get("epoch_cpu_time") or [] if v is not None]
    return {"top1": top1, "gap": None if clean is None else clean - top1, "ece": _last(per_epoch, "eval_ece"),
            "clean_top1": clean, "wall_s": sum(wall) if wall else None, "cpu_s": sum(cpu) if cpu else None,
            "epoch_wall_s": statistics.median(wall) if wall else None, "curve": stage.get("curve")}


def collect_ladder(results: dict, preset) -> dict:
    """``{row: {epochs: {seed: figures}}}`` over ``preset.ladder`` (the base budget is the tables' own runs)."""
    out: dict = {}
    for row in LADDER_ROWS:
        out[row] = {}
        for epochs, seeds in preset.ladder:
            runs = {}
            for seed in seeds:
                figures = run_figures(results.get(budget_stage_name(preset, row, seed, epochs), {}))
                if figures is not None:
                    runs[seed] = figures
            out[row][epochs] = runs
    return out


def updates_per_epoch(preset, setting: str) -> int:
    """Optimizer updates of one epoch: the in-memory loader drops the last incomplete batch."""
    batch = recipes(preset)[EFFICIENT_PAIR[setting]]["batch_size"]
    return (preset.train_subset or 60000) // batch


def collect_efficient(results: dict, preset) -> dict:
    """``{setting: {epochs: {seed: figures + updates}}}`` of the paper's ResNet-B pair at every budget."""
    out: dict = {}
    for setting, row in EFFICIENT_PAIR.items():
        out[setting] = {}
        for epochs, seeds in preset.standard_budgets:
            runs = {}
            for seed in seeds:
                figures = run_figures(results.get(budget_stage_name(preset, row, seed, epochs), {}))
                if figures is not None:
                    runs[seed] = {**figures, "updates": epochs * updates_per_epoch(preset, setting)}
            out[setting][epochs] = runs
    return out


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def paired_delta(cur: dict, base: dict, key: str = "top1") -> list[float]:
    """Per-seed differences ``cur - base`` of ``key`` over the seeds both have."""
    return [cur[s][key] - base[s][key] for s in sorted(cur) if s in base and cur[s].get(key) is not None
            and base[s].get(key) is not None]


def _delta_cell(diffs: list[float]) -> str:
    if not diffs:
        return "n/a"
    mean = statistics.fmean(diffs)
    if len(diffs) == 1:
        return f"{mean:+.2f} (1 seed)"
    agree = sum(1 for d in diffs if d != 0 and (d > 0) == (mean > 0))
    return f"{mean:+.2f} ± {statistics.stdev(diffs):.2f} ({agree}/{len(diffs)})"


def verdict(diffs: list[float]) -> str:
    """"pays" when every seed gains, "hurts" when every seed loses (at least 2 seeds), else "no clear sign"."""
    if not diffs:
        return "n/a"
    if len(diffs) < 2:
        return "one seed"
    if all(d > 0 for d in diffs):
        return "pays"
    if all(d < 0 for d in diffs):
        return "hurts"
    return "no clear sign"


def ladder_section(ladder: dict, preset) -> str:
    budgets = [e for e, _ in preset.ladder]
    if not budgets or not any(ladder[r][e] for r in ladder for e in budgets):
        return ""
    seeds = {e: list(s) for e, s in preset.ladder}
    lines = ["### Budget ladder: where each trick starts to pay", "",
             "Every budget is a run of that many epochs with its schedule fitted to it (warmup, cosine or step "
             "milestones over the budget), not an epoch of a longer run. Δ top-1 is paired per seed against the "
             f"row the trick is added to; the train-val gap is the clean top-1 of {preset.clean_subset:,} fixed "
             "training images minus "
             "the validation top-1, at the end of that row's run: a regularizer has something to close only where "
             "the gap is open.", "",
             "| trick (vs row) | " + " | ".join(f"{e} ep: Δ top-1 ({len(seeds[e])} seed{'s' * (len(seeds[e]) > 1)})"
                                                for e in budgets)
             + " | " + " | ".join(f"{e} ep: verdict" for e in budgets) + " |",
             "|---|" + "---|" * (2 * len(budgets))]
    for row, base in LADDER_TRICKS.items():
        diffs = {e: paired_delta(ladder[row][e], ladder[base][e]) for e in budgets}
        lines.append(f"| {row} (vs {base}) | " + " | ".join(_delta_cell(diffs[e]) for e in budgets) + " | "
                     + " | ".join(verdict(diffs[e]) for e in budgets) + " |")
    lines += ["", "| row | " + " | ".join(f"{e} ep: top-1 | {e} ep: gap | {e} ep: ECE" for e in budgets) + " |",
              "|---|" + "---|" * (3 * len(budgets))]
    for row in LADDER_ROWS:
        cells = []
        for e in budgets:
            runs = ladder[row][e].values()
            cells += [_cell([r["top1"] for r in runs]), _cell([r["gap"] for r in runs if r["gap"] is not None]),
                      _cell([r["ece"] for r in runs if r["ece"] is not None])]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "ECE: expected calibration error of the validation predictions (%, 15 bins; Guo et al. 2017). "
              "Mean ± sd over the budget's seeds; (k/n): seeds on which Δ has the mean's sign; verdict: \"pays\" "
              "when Δ > 0 on every seed, \"hurts\" when Δ < 0 on every seed.", ""]
    return "\n".join(lines)


def _setting_points(eff: dict, setting: str, key: str) -> list[tuple[int, float, float, list[float]]]:
    """(epochs, mean x, mean top-1, top-1 values) per budget of a setting, x = ``key`` (cpu_s, wall_s, updates)."""
    points = []
    for epochs, runs in sorted(eff[setting].items()):
        xs = [r[key] for r in runs.values() if r.get(key) is not None]
        tops = [r["top1"] for r in runs.values()]
        if xs and tops:
            points.append((epochs, statistics.fmean(xs), statistics.fmean(tops), tops))
    return points


def efficient_comparisons(eff: dict, preset) -> dict:
    """The paper's pair compared at equal epochs, equal updates and equal training time, and the time each
    setting needs to reach the baseline's base-budget top-1 (the shortest budget whose mean reaches it)."""
    base, fast = eff["baseline"], eff["efficient"]
    out: dict = {"equal_epochs": [], "equal_updates": [], "equal_time": [], "time_to_target": {}}
    for epochs in sorted(base):
        if base[epochs] and fast.get(epochs):
            out["equal_epochs"].append((epochs, epochs, paired_delta(fast[epochs], base[epochs])))
    ratio = updates_per_epoch(preset, "baseline") / updates_per_epoch(preset, "efficient")
    for epochs in sorted(base):
        match = round(epochs * ratio)
        if base[epochs] and fast.get(match) and abs(match - epochs * ratio) < 1e-9:
            out["equal_updates"].append((epochs, match, paired_delta(fast[match], base[epochs])))
    fast_time = {e: _mean([r["cpu_s"] for r in runs.values() if r.get("cpu_s")]) for e, runs in fast.items() if runs}
    for epochs in sorted(base):
        t = _mean([r["cpu_s"] for r in base[epochs].values() if r.get("cpu_s")])
        if t is None or not fast_time:
            continue
        match = min((e for e in fast_time if fast_time[e] is not None), key=lambda e: abs(fast_time[e] - t),
                    default=None)
        if match is not None and abs(fast_time[match] - t) <= 0.35 * t:  # only a pair that is near equal time
            out["equal_time"].append((epochs, match, paired_delta(fast[match], base[epochs]), t, fast_time[match]))
    if base.get(preset.epochs):
        target = statistics.fmean(r["top1"] for r in base[preset.epochs].values())
        out["target"] = target
        for setting in ("baseline", "efficient"):
            reached = [(x, e) for e, x, top1, _ in _setting_points(eff, setting, "cpu_s") if top1 >= target]
            out["time_to_target"][setting] = min(reached) if reached else None
    return out


def efficient_section(eff: dict, preset, amp: bool) -> str:
    budgets = sorted({e for s in eff.values() for e, runs in s.items() if runs})
    if not budgets:
        return ""
    b = recipes(preset)["B-standard"]["batch_size"]
    low = "bfloat16 autocast + channels_last" if amp else "float32 (no native low precision on this machine)"
    lines = ["### Efficient training against seconds and updates (ResNet-B)", "",
             f"baseline: float32, batch {b}, step decay, no tricks; efficient: {low}, batch {4 * b}, lr scaled "
             "linearly, warmup, zero γ, no bias decay. Each point is a run with its schedule fitted to its budget. "
             "Training time: the training epochs' CPU time of the run's process divided by its threads "
             f"({preset.threads}), so that other work on the machine does not inflate it; validation excluded.", "",
             "| setting | epochs | updates | training time (s) | images/s (median epoch, wall) | top-1 | ECE |", "|---|---|---|---|---|---|---|"]
    for setting in ("baseline", "efficient"):
        for epochs in budgets:
            runs = list(eff[setting].get(epochs, {}).values())
            if not runs:
                continue
            cpu = [r["cpu_s"] / preset.threads for r in runs if r.get("cpu_s")]
            # over the median epoch: a paused epoch (or one shared with other work) does not move it
            speed = [updates_per_epoch(preset, setting) * (b if setting == "baseline" else 4 * b) / r["epoch_wall_s"]
                     for r in runs if r.get("epoch_wall_s")]
            lines.append(f"| {setting} | {epochs} | {runs[0]['updates']} | {_cell(cpu, 0)} | {_cell(speed, 0)} | "
                         f"{_cell([r['top1'] for r in runs])} | {_cell([r['ece'] for r in runs if r['ece'] is not None])} |")
    comp = efficient_comparisons(eff, preset)
    ref = reference.EFFICIENT_TRAINING
    lines += ["", f"The paper (ResNet-50, 8 V100, 120 epochs each): {ref['baseline'][0]:.1f} against "
              f"{ref['efficient'][0]:.1f} min per epoch, top-1 {ref['baseline'][1]:.2f} against "
              f"{ref['efficient'][1]:.2f} at equal epochs.", "", "| comparison | baseline | efficient | Δ top-1 (efficient - baseline) |", "|---|---|---|---|"]
    for b_e, f_e, diffs in comp["equal_epochs"]:
        lines.append(f"| equal epochs | {b_e} ep | {f_e} ep | {_delta_cell(diffs)} |")
    for b_e, f_e, diffs in comp["equal_updates"]:
        lines.append(f"| equal updates | {b_e} ep | {f_e} ep | {_delta_cell(diffs)} |")
    for b_e, f_e, diffs, t_b, t_f in comp["equal_time"]:
        lines.append(f"| nearest equal time | {b_e} ep ({t_b / preset.threads:.0f} s) | {f_e} ep "
                     f"({t_f / preset.threads:.0f} s) | {_delta_cell(diffs)} |")
    if "target" in comp:
        def reach(setting):
            hit = comp["time_to_target"].get(setting)
            return "not reached at these budgets" if hit is None else f"{hit[0] / preset.threads:.0f} s ({hit[1]} ep)"

        lines += ["", f"Time to the baseline's {preset.epochs}-epoch top-1 ({comp['target']:.2f} %, mean over seeds; "
                      "the shortest budget whose mean reaches it): baseline " + reach("baseline") + ", efficient "
                      + reach("efficient") + "."]
    return "\n".join(lines) + "\n"


def reading(ladder: dict, eff: dict, preset, transfer_tables: dict | None = None) -> str:
    """Plain sentences: which of the paper's claims reproduce at which budget, from the figures above."""
    budgets = [e for e, _ in preset.ladder]
    lines = ["### Reading: the paper's claims at each budget", ""]
    for row, base in LADDER_TRICKS.items():
        parts = []
        for e in budgets:
            diffs = paired_delta(ladder[row][e], ladder[base][e])
            if diffs:
                parts.append(f"{e} ep {statistics.fmean(diffs):+.2f} ({verdict(diffs)})")
        if parts:
            lines.append(f"- {row[2:]} (on {base}): " + "; ".join(parts) + ".")
    comp = efficient_comparisons(eff, preset) if eff else None
    if comp:
        for kind, label in (("equal_epochs", "at equal epochs"), ("equal_updates", "at equal updates"),
                            ("equal_time", "at nearly equal training time")):
            for entry in comp[kind]:
                diffs = entry[2]
                if diffs:
                    lines.append(f"- efficient training {label} (baseline {entry[0]} ep, efficient {entry[1]} ep): "
                                 f"{statistics.fmean(diffs):+.2f} top-1 ({verdict(diffs)}).")
    if transfer_tables:
        longest = preset.longest
        for table, metric, title in transfer_tables["metrics"]:
            rows = transfer_tables["tables"].get(table, {})
            parts = []
            for row, base in LADDER_TRICKS.items():
                cur, ref = rows.get(f"{row} @{longest}", {}).get(metric), rows.get(f"{base} @{longest}", {}).get(metric)
                if cur and ref and len(cur) == len(ref):
                    diffs = [a - b for a, b in zip(cur, ref, strict=True)]
                    parts.append(f"{row[2:]} {statistics.fmean(diffs):+.2f} ({verdict(diffs)})")
            if parts:
                lines.append(f"- transfer of the {longest}-epoch backbones, {title}: " + "; ".join(parts) + ".")
    lines.append("")
    return "\n".join(lines) if len(lines) > 3 else ""


def _budget_axes(ax, budgets: list[int], ylabel: str, title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(e) for e in budgets])
    ax.set_xlabel("budget (epochs, schedule fitted to it)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def figures(run_dir, ladder: dict, eff: dict, preset) -> list[str]:
    """ladder.png (Δ top-1 per trick and the train-val gap against budget) and efficient_training.png (top-1
    against training time and against updates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    names = []
    budgets = [e for e, _ in preset.ladder]
    if budgets and any(ladder[r][e] for r in ladder for e in budgets):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
        for row, base in LADDER_TRICKS.items():
            xs, ys, es = [], [], []
            for e in budgets:
                diffs = paired_delta(ladder[row][e], ladder[base][e])
                if diffs:
                    xs.append(e)
                    ys.append(statistics.fmean(diffs))
                    es.append(statistics.stdev(diffs) if len(diffs) > 1 else 0.0)
            if xs:
                left.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=_COLOURS[row],
                              label=f"{row[2:]} (vs {base})")
        left.axhline(0, color="grey", lw=0.8)
        _budget_axes(left, budgets, "Δ val top-1 (points, paired per seed)", "Where each trick pays")
        for row in LADDER_ROWS:
            xs = [e for e in budgets if any(r["gap"] is not None for r in ladder[row][e].values())]
            ys = [statistics.fmean(r["gap"] for r in ladder[row][e].values() if r["gap"] is not None) for e in xs]
            if xs:
                right.plot(xs, ys, marker="o", color=_COLOURS[row], label=row)
        _budget_axes(right, budgets, "train (clean) - val top-1 (points)", "Train-val gap")
        fig.tight_layout()
        fig.savefig(run_dir / "ladder.png", dpi=120)
        plt.close(fig)
        names.append("ladder.png")
    if any(eff.get(s) for s in eff) and any(runs for s in eff.values() for runs in s.values()):
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for ax, key, label in ((axes[0], "cpu_s", "training time (s, CPU time / threads)"),
                               (axes[1], "updates", "optimizer updates")):
            for setting, colour in (("baseline", "#c44e52"), ("efficient", "#4c72b0")):
                points = _setting_points(eff, setting, key)
                if not points:
                    continue
                scale = preset.threads if key == "cpu_s" else 1
                xs = [x / scale for _, x, _, _ in points]
                ys = [y for _, _, y, _ in points]
                sds = [statistics.stdev(t) if len(t) > 1 else 0.0 for _, _, _, t in points]
                ax.errorbar(xs, ys, yerr=sds, marker="o", capsize=3, color=colour, label=setting)
                for (e, _, _, _), x, y in zip(points, xs, ys, strict=True):
                    ax.annotate(f"{e} ep", (x, y), fontsize=7, xytext=(3, -10), textcoords="offset points")
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
            ax.set_xlabel(label)
            ax.set_ylabel("val top-1 (%)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.suptitle("Efficient training (ResNet-B): accuracy against time and against updates", fontsize=10)
        fig.tight_layout()
        fig.savefig(run_dir / "efficient_training.png", dpi=120)
        plt.close(fig)
        names.append("efficient_training.png")
    return names
