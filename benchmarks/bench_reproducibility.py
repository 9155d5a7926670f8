"""How far one study stage moves when what differs between two machines of a kind differs: the same command run
again, with another thread count, with the CPU kernels an older CPU would get, and (the yardstick) with another
seed. Each variant runs the study's own stage (``plugins.reproduce.study.build_stages``) through its Pipeline.

    python benchmarks/bench_reproducibility.py [--preset quick] [--rows B-standard "+ label smoothing"]

Variants:
  rerun         the same stage again: bitwise equal on one machine (tests/reliability/test_rel_determinism.py);
  1 thread      OMP_NUM_THREADS=1 instead of the stage's pinned threads: float sums in another order;
  AVX2 kernels  ONEDNN_MAX_CPU_ISA=AVX2 and MKL_ENABLE_INSTRUCTIONS=AVX2: the oneDNN/MKL kernels of a CPU without
                AVX-512 or bfloat16 units (bfloat16 is then emulated), the same instructions' results otherwise;
  seed + 1      another seed: the spread the study's seeds measure, against which the others are read.

Printed per row and variant: the final val top-1, its difference from the reference run, the largest weight
difference of the exported backbone, and the first epoch whose training loss differs.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from plugins.reproduce.pipeline import Pipeline  # noqa: E402
from plugins.reproduce.presets import get_preset  # noqa: E402
from plugins.reproduce.study import build_stages, cls_stage_name, low_precision  # noqa: E402

AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _other_seed(stage):
    at = stage.argv.index("--seed") + 1
    return dataclasses.replace(stage, argv=[*stage.argv[:at], str(int(stage.argv[at]) + 1), *stage.argv[at + 1:]])


VARIANTS = {"reference": lambda s: s, "rerun": lambda s: s,
            "1 thread": lambda s: dataclasses.replace(s, threads=1),
            "AVX2 kernels": lambda s: dataclasses.replace(s, env={**s.env, **AVX2}),
            "seed + 1": _other_seed}


def _figures(out: Path) -> tuple[float, list[float], dict]:
    with open(out / "train" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    weights = torch.load(out / "backbone.pth", weights_only=True)["state_dict"]
    return float(rows[-1]["eval_top1"]), [float(r["train_loss"]) for r in rows], weights


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick", choices=("quick", "full"))
    p.add_argument("--rows", nargs="+", default=["B-standard", "+ label smoothing"])
    a = p.parse_args(argv)
    preset = get_preset(a.preset)
    print(f"preset {a.preset}: {preset.epochs} epochs, {preset.train_subset} training images; bfloat16 units: "
          f"{low_precision()}; {os.cpu_count()} CPU(s); torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="bench-repro-") as tmp:
        for row in a.rows:
            name = cls_stage_name(row, preset.seeds[0])
            ref = None
            print(f"\n{row} ({name}, {preset.threads} threads pinned)")
            print(f"{'variant':<14} {'top-1':>7} {'Δ top-1':>8} {'max |Δw|':>10}  first epoch whose loss differs")
            for variant, change in VARIANTS.items():
                run_dir = Path(tmp) / f"{name}-{variant.replace(' ', '_')}"
                stage = next(s for s in build_stages(preset, run_dir) if s.name == name)
                pipe = Pipeline(run_dir, [change(stage)], echo=lambda *_: None)
                pipe.run()
                top1, losses, weights = _figures(pipe.stage_dir(name))
                if ref is None:
                    ref = (top1, losses, weights)
                dw = max(float((weights[k].float() - ref[2][k].float()).abs().max()) for k in weights)
                first = next((i for i, (x, y) in enumerate(zip(losses, ref[1], strict=True)) if x != y), None)
                print(f"{variant:<14} {top1:7.2f} {top1 - ref[0]:+8.2f} {dw:10.2e}  "
                      f"{'none' if first is None else first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
