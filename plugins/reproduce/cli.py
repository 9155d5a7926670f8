"""``python -m plugins.reproduce --preset quick|full``: run the study and write ``results/<run>/``."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .pipeline import _SOURCE_PACKAGES, Pipeline, Stage
from .presets import PRESETS, get_preset
from .report import read_lr_csv, write_report
from .study import D2_SOURCES, MM_SOURCES, TIMM_SOURCES, build_stages, low_precision

TRACE_STEPS, TRACE_WARMUP, TRACE_LR = 60, 20, 0.02


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def source_commit() -> str | None:
    """The checkout's commit (short), with ``+ uncommitted changes`` when the packages differ from it; None outside
    a git checkout. The report names it, so that a published run says which code made it."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", *_SOURCE_PACKAGES],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (" + uncommitted changes" if dirty else "")


def _trace_parser(framework: str):
    def parse(out: Path) -> dict:
        from plugins.tricks.lr_schedule import warmup_cosine_factor

        csv_path = next(out.rglob("lr_per_step.csv"), None)
        if csv_path is None:
            raise RuntimeError(f"{framework} wrote no lr_per_step.csv under {out}")
        steps, lrs = read_lr_csv(csv_path)
        expected = [TRACE_LR * warmup_cosine_factor(i, TRACE_STEPS, TRACE_WARMUP) for i in steps]
        err = max(abs(a - b) for a, b in zip(lrs, expected, strict=True))
        return {"framework": framework, "steps": steps, "lr": lrs, "expected": expected, "max_abs_error": err}

    return parse


def lr_trace_stages(scenes_stage: str, model: str) -> list[Stage]:
    """The same warmup + cosine recipe (60 updates, 20 warmup, lr 0.02) applied by each adapter in a real run."""
    data = "{dep:" + scenes_stage + "}"
    common_mm = [f"train_cfg.max_iters={TRACE_STEPS}", f"optim_wrapper.optimizer.lr={TRACE_LR}",
                 f"param_scheduler.0.warmup_steps={TRACE_WARMUP}", f"param_scheduler.0.end={TRACE_STEPS}",
                 f"train_cfg.val_interval={TRACE_STEPS + 1}", "auto_scale_lr.enable=False",
                 "train_dataloader.batch_size=2", "train_dataloader.num_workers=0",
                 "train_dataloader.persistent_workers=False"]
    stages = [
        Stage("lr-trace-timm_ext", ["-m", "timm_ext.train", "--model", model + "d", "--recipe", "paper", "--dataset",
                                    "fashion_mnist", "--train-subset", str(TRACE_STEPS // 3 * 32), "--val-subset",
                                    "64", "-b", "32", "--epochs", "3", "--warmup-epochs", "1", "--sched",
                                    "tricks_cosine", "--lr", str(TRACE_LR), "--min-lr-ratio", "0", "--mixup", "0",
                                    "--no-amp", "--scale", "1", "1", "--ratio", "1", "1", "--color-jitter", "0",
                                    "--no-progress", "--output", "{out}", "--experiment", "trace"], cost=8, parse=_trace_parser("timm_ext"),
              sources=TIMM_SOURCES),
        Stage("lr-trace-mm_ext", ["-m", "mm_ext.train", "mm_ext/configs/faster-rcnn_timm-r26nd_fpn_tricks_fashion-scenes.py",
                                  "--work-dir", "{out}", "--cfg-options", f"model.backbone.model_name={model}d",
                                  "model.backbone.checkpoint=None", *common_mm],
              deps=[scenes_stage], cost=32, parse=_trace_parser("mm_ext"), env={"FASHION_SCENES_ROOT": data + "/"},
              sources=MM_SOURCES),
        Stage("lr-trace-d2_ext", ["-m", "d2_ext.train_net", "--config-file",
                                  "d2_ext/configs/faster_rcnn_timm_R_26n_D_FPN_tricks_fashion_scenes.yaml",
                                  "--scenes-root", data, "OUTPUT_DIR", "{out}", "TRICKS.TIMM.MODEL_NAME", model + "d",
                                  "TRICKS.TIMM.CHECKPOINT", "", "SOLVER.MAX_ITER", str(TRACE_STEPS),
                                  "SOLVER.BASE_LR", str(TRACE_LR), "TRICKS.BASE_BATCH_SIZE", "0",
                                  "TRICKS.WARMUP_ITERS", str(TRACE_WARMUP), "TRICKS.MIN_LR_RATIO", "0.0",
                                  "TEST.EVAL_PERIOD", "0", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"],
              deps=[scenes_stage], cost=14, parse=_trace_parser("d2_ext"), sources=D2_SOURCES),
    ]
    for stage in stages:  # one core each: the three run side by side on two cores, as the detectors do
        stage.threads = 1
    return stages


def select_stages(stages: list[Stage], pattern: str) -> list[Stage]:
    """The stages matching ``pattern`` (fnmatch) and, transitively, the stages they depend on, in order."""
    by_name = {s.name: s for s in stages}
    wanted = {s.name for s in stages if fnmatch.fnmatch(s.name, pattern)}
    todo = list(wanted)
    while todo:
        for dep in by_name[todo.pop()].deps:
            if dep not in wanted:
                wanted.add(dep)
                todo.append(dep)
    return [s for s in stages if s.name in wanted]


def _report_only(run_dir: Path, preset) -> int:
    path = run_dir / "results.json"
    try:
        data = json.loads(path.read_text())
        stages, meta, sizes = data["stages"], data["meta"], data["preset"]
    except FileNotFoundError:
        print(f"error: --report-only: {path} does not exist; run the study first", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: --report-only: {path} is not a results.json of this study ({e})", file=sys.stderr)
        return 2
    if sizes != json.loads(json.dumps(preset.to_dict())):  # as stored: tuples become lists
        print(f"error: --report-only: {path} was written with other sizes than preset {preset.name!r} has now; "
              "rerun the study", file=sys.stderr)
        return 2
    report = write_report(run_dir, preset, stages, meta)
    print(report.read_text())
    print(f"report: {report}")
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m plugins.reproduce", description=__doc__)
    p.add_argument("--preset", default="quick", help=f"study size, one of {sorted(PRESETS)} (default: quick)")
    p.add_argument("--out", default=None, help="run folder (default: results/<preset>)")
    p.add_argument("--list", action="store_true", help="print the stages and exit")
    p.add_argument("--only", default=None, metavar="GLOB",
                   help="run only the stages whose name matches GLOB (and what they depend on), e.g. 'lr-trace-*'; "
                        "their tables go to <run folder>/partial/report.md (the full run's report.md is left as it is)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: rewrite report.md and the figures from the run folder's results.json, "
                        "keeping the command and wall time of the run that made it")
    p.add_argument("--resume-from", default=None, metavar="DIR",
                   help="before running, take the finished stages packed in DIR (--pack) that the run folder lacks "
                        "(same stage name and key), so that a study can continue on another machine")
    p.add_argument("--pack", default=None, metavar="DIR",
                   help="run nothing: copy the finished stages' records (and the checkpoints unfinished stages still "
                        "need) into DIR, to continue elsewhere with --resume-from DIR; safe while a run is going on")
    p.add_argument("--jobs", type=int, default=2, metavar="N",
                   help="stages run side by side, as many as fit in the machine's cores by their threads (each "
                        "classification stage holds 2, each detector or segmenter 1: two detectors run at once on "
                        "2 cores); 1: one at a time (default: 2)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: accepted values are 1 and more")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        preset = get_preset(args.preset)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.resume_from and not Path(args.resume_from).is_dir():
        print(f"error: --resume-from {args.resume_from}: not a folder (one written by --pack)", file=sys.stderr)
        return 2
    run_dir = Path(args.out or Path("results") / preset.name).resolve()
    try:  # build_stages already writes the recipes there
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: --out {args.out or run_dir}: cannot create the run folder ({e.strerror or e})", file=sys.stderr)
        return 2
    if args.report_only:
        return _report_only(run_dir, preset)
    stages = build_stages(preset, run_dir)
    stages += lr_trace_stages("data-fashion-scenes", preset.model)
    if args.only:
        stages = select_stages(stages, args.only)
        if not stages:
            print(f"error: --only {args.only!r} matches no stage (see --list)", file=sys.stderr)
            return 2
    if args.list:
        for i, s in enumerate(stages, 1):
            print(f"{i:3d}. {s.name}: python {shlex.join(s.argv)}")
        return 0
    if args.pack:
        n, size = Pipeline(run_dir, stages).pack(Path(args.pack))
        print(f"packed {n} of {len(stages)} stages ({size / 1e6:.1f} MB) into {args.pack}; continue elsewhere with "
              f"--resume-from {args.pack}")
        return 0
    command = "python -m plugins.reproduce " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(f"bag-of-tricks study, preset {preset.name!r}: {len(stages)} stages -> {run_dir}")
    t0, commit = time.time(), source_commit()  # the code the run starts with
    pipe = Pipeline(run_dir, stages)
    if args.resume_from:
        restored = pipe.restore(Path(args.resume_from))
        print(f"restored {len(restored)} finished stages from {args.resume_from}")
    try:
        results = pipe.run(jobs=args.jobs, keep_going=not args.only)
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are cached; rerun the same command to resume.", file=sys.stderr)
        return 130
    except RuntimeError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    wall = time.time() - t0
    meta = {"command": command.strip(), "machine": machine(), "wall_time": f"{wall / 60:.1f} min",
            "low_precision": low_precision(), "commit": commit, "excluded": dict(pipe.failed),
            "cores": os.cpu_count() or 1}
    stage_dirs = {s.name: pipe.stage_dir(s.name) for s in stages}
    if args.only:  # the tables these stages fill, beside the full run's report (which they do not replace)
        partial = run_dir / "partial"
        partial.mkdir(exist_ok=True)
        report = write_report(partial, preset, results, {**meta, "only": args.only}, stage_dirs)
        print(f"ran {len(stages)} stages matching {args.only!r}; results under {run_dir / 'stages'}, their tables "
              f"in {report}")
        return 0
    report = write_report(run_dir, preset, results, meta, stage_dirs)
    print(report.read_text())
    print(f"report: {report}")
    if pipe.failed:
        print(f"error: {len(pipe.failed)} stages failed or were left out (report.md, 'Excluded runs'); rerun the same "
              "command to retry them", file=sys.stderr)
        return 1
    return 0
