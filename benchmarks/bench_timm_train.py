"""The study's classification stage on timm's loop (this checkout) against the same stage on the recipe engine of
an earlier commit, side by side in one run: images per second of training, and the ratio.

    python benchmarks/bench_timm_train.py [--old-commit c7d52ec] [--rows D-efficient B-standard] [--rounds 2]

Each round runs both commands once, alternating which goes first, as subprocesses with the same threads. The
rows are the study's (``plugins.reproduce.study.recipes`` at the quick preset unless ``--preset full``): the
same recipe file, model, data (the fashion photos in memory, flips only) and seed on both sides. The old side
is a ``git worktree`` of ``--old-commit`` (the last commit with the separate recipe engine), run with this
checkout's virtual environment. The figure per run is the median over its epochs of ``images_per_s`` in
summary.csv (both engines write it: training images / seconds of the epoch's updates), as the study reports it;
the ratio is new / old (the target is >= 0.95).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugins.reproduce.presets import get_preset  # noqa: E402
from plugins.reproduce.study import low_precision, recipes  # noqa: E402


def _median_images_per_s(summary: Path) -> float:
    with open(summary, newline="") as f:
        return statistics.median(float(r["images_per_s"]) for r in csv.DictReader(f))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old-commit", default="c7d52ec", help="a commit with the separate recipe engine")
    p.add_argument("--preset", default="quick", choices=("quick", "full"))
    p.add_argument("--rows", nargs="+", default=["D-efficient", "B-standard"])
    p.add_argument("--epochs", type=int, default=None, help="None: the preset's")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args(argv)
    preset = get_preset(a.preset)
    rec = recipes(preset)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="bench-timm-train-") as tmp:
        tmp = Path(tmp)
        old_tree = tmp / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), a.old_commit],
                       check=True, capture_output=True)
        try:
            print(f"study preset {a.preset}: fashion_photos {preset.train_subset} training images at {preset.img_size} "
                  f"px; old: recipe engine at {a.old_commit}; new: timm's loop at this checkout; "
                  f"bfloat16 units: {low_precision()}; {os.cpu_count()} CPU(s)")
            for row in a.rows:
                key = "tweak-D" if row == "D-efficient" else row
                recipe = dict(rec[key])
                if a.epochs:
                    recipe["epochs"] = a.epochs
                    recipe["step_milestones"] = [m for m in recipe["step_milestones"] if m <= a.epochs]
                recipe_file = tmp / f"{key}.yaml"
                import yaml

                recipe_file.write_text(yaml.safe_dump(recipe))
                model = preset.model + ("b" if row == "B-standard" else "d")
                common = ["--model", model, "--recipe", str(recipe_file), "--seed", "0", "--dataset", preset.dataset,
                          "--img-size", str(preset.img_size), "--in-chans", "3", "--train-subset",
                          str(preset.train_subset), "--val-subset", str(preset.val_subset), "--no-progress",
                          *(["--channels-last"] if recipe["amp"] else [])]
                figures = {"old": [], "new": []}
                for r in range(a.rounds):
                    for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                        out = tmp / f"{key}-{side}-{r}"
                        if side == "old":
                            argv_ = [*common, "--output", str(out)]
                            summary, cwd, path = out / "summary.csv", old_tree, str(old_tree)
                        else:
                            argv_ = [*common, "--scale", "1", "1", "--ratio", "1", "1", "--color-jitter", "0",
                                     "--checkpoint-hist", "1", "--output", str(out), "--experiment", "run"]
                            summary, cwd, path = out / "run" / "summary.csv", ROOT, str(ROOT)
                        proc = subprocess.run([sys.executable, "-m", "timm_ext.train", *argv_], cwd=cwd,
                                              env={**env, "PYTHONPATH": path}, capture_output=True, text=True)
                        if proc.returncode != 0:
                            print(proc.stderr[-3000:], file=sys.stderr)
                            return 1
                        figures[side].append(_median_images_per_s(summary))
                old, new = statistics.median(figures["old"]), statistics.median(figures["new"])
                print(f"  {row:12s} {model}, batch {recipe['batch_size']}, amp {recipe['amp']}: "
                      f"old {old:7.0f} images/s  new {new:7.0f} images/s  new/old {new / old:.3f}  "
                      f"(runs: old {[round(x) for x in figures['old']]}, new {[round(x) for x in figures['new']]})")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)],
                           capture_output=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
