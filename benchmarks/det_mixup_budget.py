"""Where detection mixup starts to pay: the Bag of Freebies ablation's Detectron2 rows "+ label smoothing" and
"+ mixup" (alpha 1.5, per-box weights), and the same mixup switched off for the last quarter of the run
(``det_mixup_stop_fraction: 0.75``), at the study's 800 iterations and at longer schedules (each its own run, its
warmup and step decay scaled with it). One detector seed, the full study's D-efficient backbone of seed 0.

    python benchmarks/det_mixup_budget.py [--iters 800 2400] [--seed 0] [--out results/full]

The runs are stages of the full study's run folder (cached, resumable): the rows the study already ran at its own
length are taken from it, and the backbone and the scenes are the study's stages (made first if missing, by the
same commands). Prints box AP / AP50 per row and length, with each mixup row's difference from label smoothing's;
writes the table to <out>/det_mixup_budget.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugins.reproduce.cli import select_stages  # noqa: E402
from plugins.reproduce.pipeline import Pipeline  # noqa: E402
from plugins.reproduce.presets import get_preset  # noqa: E402
from plugins.reproduce.study import (  # noqa: E402
    _write_recipe,
    build_stages,
    det_ablation_recipes,
    det_ablation_stage_name,
    det_ablation_stages,
)

ROWS = ("+ label smoothing", "+ mixup")
STOP = 0.75


def probe_stages(run_dir: Path, iters: int, seed: int) -> list:
    """The rows at ``iters``: the study's own stages where ``iters`` is its length, renamed runs otherwise."""
    full = get_preset("full")
    p = dataclasses.replace(full, det_iters=iters, det_ablation_frameworks=("d2",), transfer_seeds=(seed,))
    suffix = "" if iters == full.det_iters else f"-i{iters}"
    stages = {s.name: s for s in det_ablation_stages(p, run_dir)}
    out = []
    for row in ROWS:
        stage = stages[det_ablation_stage_name("d2", row, seed)]
        base = stage.name.rsplit("-s", 1)[0]
        out.append(dataclasses.replace(stage, name=f"{base}{suffix}-s{seed}"))
    mixup = out[-1]
    recipe = {**det_ablation_recipes(p)["+ mixup"], "det_mixup_stop_fraction": STOP}
    at = mixup.argv.index("--recipe") + 1
    argv = [*mixup.argv[:at], _write_recipe(run_dir, f"det-ablation-mixup-stop-{iters}", recipe),
            *mixup.argv[at + 1:]]
    out.append(dataclasses.replace(mixup, name=f"detab-d2-mixup-stop75-i{iters}-s{seed}", argv=argv))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, nargs="+", default=[800, 2400], help="detector iterations (default 800 2400)")
    ap.add_argument("--seed", type=int, default=0, help="detector seed (default 0)")
    ap.add_argument("--out", default="results/full", help="the full study's run folder (default results/full)")
    ap.add_argument("--jobs", type=int, default=2, help="stages side by side, one core each (default 2)")
    args = ap.parse_args(argv)
    if any(i < 10 for i in args.iters):
        ap.error(f"--iters {args.iters}: each must be at least 10")
    run_dir = Path(args.out).resolve()
    probes = {i: probe_stages(run_dir, i, args.seed) for i in args.iters}
    study = build_stages(get_preset("full"), run_dir)
    deps = {d for stages in probes.values() for s in stages for d in s.deps}  # the backbone and the scenes
    closure = {x.name for d in deps for x in select_stages(study, d)}
    needed = [s for s in study if s.name in closure]
    results = Pipeline(run_dir, needed + [s for stages in probes.values() for s in stages]).run(jobs=args.jobs)

    labels = [*ROWS, f"+ mixup, off for the last {1 - STOP:.0%}"]
    lines = [f"Detectron2 Faster R-CNN, D-efficient backbone (seed 0), detector seed {args.seed}: box AP / AP50 "
             "(%); Δ: AP against + label smoothing at the same length.", "",
             "| iterations | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for iters, stages in probes.items():
        ap_ls = results[stages[0].name]["bbox/AP"]
        cells = []
        for i, s in enumerate(stages):
            m = results[s.name]
            delta = "" if i == 0 else f" (Δ {m['bbox/AP'] - ap_ls:+.2f})"
            cells.append(f"{m['bbox/AP']:.2f} / {m['bbox/AP50']:.2f}{delta}")
        lines.append(f"| {iters} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (run_dir / "det_mixup_budget.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
