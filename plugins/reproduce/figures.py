"""The study report's figures: bar charts per table, validation top-1 per epoch, the lr each adapter applied,
and transfer against top-1 (the budget ladder's and efficient training's are in ``budgets``)."""

from __future__ import annotations

from pathlib import Path

from .report import TRANSFER_METRICS, _stats
from .study import RANDOM_ROW, STACKED_ROWS, cls_stage_name


def bar_charts(run_dir: Path, tables: dict, results: dict, seeds) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = []
    for key, (title, metric) in {"model_tweaks": ("Model tweaks: top-1", "top1"),
                                 "stacked": ("Stacked refinements: top-1", "top1"),
                                 "detection_mmdet": ("Faster R-CNN (MMDetection): box mAP", "mAP"),
                                 "detection_d2": ("Faster R-CNN (Detectron2): box AP", "mAP"),
                                 "segmentation_mmseg": ("FCN (MMSegmentation): mIoU", "mIoU"),
                                 "detection_ablation_mmdet": ("Detection tricks, MMDetection: box mAP", "mAP"),
                                 "detection_ablation_d2": ("Detection tricks, Detectron2: box AP", "mAP")}.items():
        rows = {r: v[metric] for r, v in tables.get(key, {}).items() if v[metric]}
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.2))
        means = [_stats(v)[0] for v in rows.values()]
        sds = [_stats(v)[1] for v in rows.values()]
        ax.bar(range(len(rows)), means, yerr=sds if len(seeds) > 1 else None, color="#4c72b0", capsize=3)
        ax.set_xticks(range(len(rows)), list(rows), rotation=20, ha="right", fontsize=8)
        lo = min(means) - 2 * max(max(sds), 0.5)
        ax.set_ylim(max(0.0, lo), max(means) + 2 * max(max(sds), 0.5))
        for i, (m, sd) in enumerate(zip(means, sds, strict=True)):  # above the error bar, not on it
            ax.text(i, m + (sd if len(seeds) > 1 else 0.0), f"{m:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_title(title)
        fig.tight_layout()
        name = f"bars_{key}.png"
        fig.savefig(run_dir / name, dpi=120)
        plt.close(fig)
        names.append(name)

    fig, ax = plt.subplots(figsize=(7, 4))
    for row in STACKED_ROWS + ["teacher"]:
        st = cls_stage_name(row, seeds[0]) if row != "teacher" else f"cls-teacher-s{seeds[0]}"
        curve = results.get(st, {}).get("curve")
        if curve:
            ax.plot(range(1, len(curve) + 1), curve, marker="o", label=row)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(f"Validation accuracy per epoch (seed {seeds[0]})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run_dir / "val_top1_per_epoch.png", dpi=120)
    plt.close(fig)
    names.append("val_top1_per_epoch.png")

    traces = {k: v for k, v in results.items() if k.startswith("lr-trace-")}
    if traces:
        fig, ax = plt.subplots(figsize=(7, 4))
        styles = {"timm_ext": ("-", 4), "mm_ext": ("--", 2.5), "d2_ext": (":", 2)}
        # thickest first, so that every curve stays visible where they coincide
        for m in sorted(traces.values(), key=lambda m: -styles.get(m["framework"], ("-", 1))[1]):
            fw = m["framework"]
            ls, lw = styles.get(fw, ("-", 1))
            ax.plot(m["steps"], m["lr"], ls, lw=lw,
                    label=f"{fw} (actually applied; max |error| {m['max_abs_error']:.1e})")
        ref = next(iter(traces.values()))
        ax.plot(ref["steps"], ref["expected"], "k-", lw=0.8, label="plugins.tricks.lr_schedule (closed form)")
        ax.set_xlabel("update i")
        ax.set_ylabel("learning rate")
        ax.set_title("Warmup + cosine, one recipe, three ecosystems")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(run_dir / "lr_curves.png", dpi=120)
        plt.close(fig)
        names.append("lr_curves.png")
    return names


def transfer_scatter(run_dir: Path, data: dict, tables: dict, seed: int) -> list[str]:
    """transfer_vs_top1.png: each transfer metric (mean ± sd over detector seeds) against the backbone's top-1,
    with the random-init control as a dashed line."""
    rows = {r: v for r, v in data["rows"].items() if v["top1"] is not None}
    if not rows or all(v[t] is None for v in rows.values() for _, _, t in TRANSFER_METRICS):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one colour and marker per backbone in every panel, named once in the figure's legend: close points
    # (backbones of near top-1) would cover each other's text labels
    colours = plt.get_cmap("tab10").colors
    style = {r: (colours[i % len(colours)], "osD^vP*X"[i % 8]) for i, r in enumerate(rows)}
    handles = {}
    fig, axes = plt.subplots(1, len(TRANSFER_METRICS), figsize=(11, 3.9))
    for ax, (table, metric, title) in zip(axes, TRANSFER_METRICS, strict=True):
        for r, v in rows.items():
            values = tables[table].get(r, {}).get(metric)
            if not values:
                continue
            mean, sd = _stats(values)
            colour, marker = style[r]
            handles[r] = ax.errorbar(v["top1"], mean, yerr=sd if len(values) > 1 else None, fmt=marker,
                                     color=colour, capsize=3)
        control = tables[table].get(RANDOM_ROW, {}).get(metric)
        if control:
            ax.axhline(_stats(control)[0], color="grey", ls="--", lw=1, label=f"{RANDOM_ROW} (no transfer)")
            ax.legend(fontsize=7, loc="best")
        rho = data["rho"][title]
        ax.set_title(f"{title}" + (f" (ρ = {rho:+.2f})" if rho is not None else ""), fontsize=9)
        ax.set_xlabel(f"backbone val top-1 (%, seed {seed})", fontsize=8)
    axes[0].set_ylabel("transfer metric (%)", fontsize=8)
    fig.suptitle("Does the better classifier transfer better?", fontsize=10)
    ordered = [r for r in rows if r in handles]
    fig.legend([handles[r] for r in ordered], ordered, loc="lower center", ncol=min(len(ordered), 6), fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(run_dir / "transfer_vs_top1.png", dpi=120)
    plt.close(fig)
    return ["transfer_vs_top1.png"]
