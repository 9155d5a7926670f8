"""The main job's machinery: stage caching, resume of an interrupted stage, packing, and the study's stages."""

import json
import sys

import pytest

from plugins.reproduce.cli import lr_trace_stages
from plugins.reproduce.pipeline import Pipeline, Stage
from plugins.reproduce.presets import PRESETS, get_preset
from plugins.reproduce.study import (
    LADDER_ROWS,
    RANDOM_ROW,
    STACKED_ROWS,
    TWEAK_ROWS,
    budget_stage_name,
    build_stages,
    cls_stage_name,
    recipes,
    transfer_rows,
    transfer_slug,
)

WRITE = "import pathlib,sys; p=pathlib.Path(sys.argv[1]); p.write_text(str(int(p.read_text())+1) if p.exists() else '1')"


def _counter_stage(name, counter, value="a", deps=()):
    return Stage(name=name, argv=["-c", WRITE, str(counter), value], deps=list(deps),
                 parse=lambda out: {"count": int(counter.read_text())})


def test_second_run_is_cached_and_a_changed_input_reruns(tmp_path):
    counter = tmp_path / "count.txt"
    run = tmp_path / "run"
    Pipeline(run, [_counter_stage("s1", counter)], echo=lambda *_: None).run()
    Pipeline(run, [_counter_stage("s1", counter)], echo=lambda *_: None).run()
    assert counter.read_text() == "1", "an unchanged stage must not run again"
    res = Pipeline(run, [_counter_stage("s1", counter, value="b")], echo=lambda *_: None).run()
    assert counter.read_text() == "2" and res["s1"]["count"] == 2, "a changed command must rerun"


def test_a_source_change_reruns_only_the_stages_that_run_that_package(tmp_path, monkeypatch):
    """An edit in d2_ext reruns the Detectron2 stages, not the classification; an edit in plugins reruns both."""
    from plugins.reproduce import pipeline

    root = tmp_path / "project"
    for package in ("plugins", "timm_ext", "mm_ext", "d2_ext"):
        (root / package).mkdir(parents=True)
        (root / package / "code.py").write_text("x = 1\n")
    monkeypatch.setattr(pipeline, "_PROJECT_ROOT", root)
    cls_count, det_count = tmp_path / "cls", tmp_path / "det"

    def stages():
        cls = Stage("cls", ["-c", WRITE, str(cls_count)], sources=("plugins", "timm_ext"))
        det = Stage("det", ["-c", WRITE, str(det_count)], deps=["cls"], sources=("plugins", "timm_ext", "d2_ext"))
        return [cls, det]

    def run():
        Pipeline(tmp_path / "run", stages(), echo=lambda *_: None).run()
        return cls_count.read_text(), det_count.read_text()

    assert run() == ("1", "1")
    assert run() == ("1", "1"), "nothing changed: both cached"
    (root / "mm_ext" / "code.py").write_text("x = 2\n")
    assert run() == ("1", "1"), "neither stage runs mm_ext"
    (root / "d2_ext" / "code.py").write_text("x = 2\n")
    assert run() == ("1", "2"), "only the stage that runs d2_ext"
    (root / "plugins" / "code.py").write_text("x = 2\n")
    assert run() == ("2", "3"), "plugins is run by both"
    with pytest.raises(ValueError, match="stage sources must be among"):
        Pipeline(tmp_path / "run", [Stage("x", ["-c", "0"], sources=("tools",))])


def test_study_stages_name_the_packages_they_run(tmp_path):
    stages = {s.name: s for s in build_stages(get_preset("quick"), tmp_path)}
    assert stages["cls-tweak-A-s0"].sources == ("plugins", "timm_ext")
    assert "d2_ext" in stages["det-d2-B-standard-e2-s0"].sources and "mm_ext" not in stages["det-d2-B-standard-e2-s0"].sources
    assert "mm_ext" in stages["seg-mmseg-mixup-e4-s0"].sources and "d2_ext" not in stages["seg-mmseg-mixup-e4-s0"].sources


def test_dependency_change_reruns_dependents(tmp_path):
    c1, c2 = tmp_path / "c1", tmp_path / "c2"
    run = tmp_path / "run"
    Pipeline(run, [_counter_stage("a", c1), _counter_stage("b", c2, deps=["a"])], echo=lambda *_: None).run()
    Pipeline(run, [_counter_stage("a", c1, "x"), _counter_stage("b", c2, deps=["a"])], echo=lambda *_: None).run()
    assert c2.read_text() == "2", "a stage whose dependency changed must rerun"


def test_failed_stage_leaves_no_marker_and_reports_its_log(tmp_path):
    bad = Stage("bad", ["-c", "import sys; print('boom'); sys.exit(3)"])
    with pytest.raises(RuntimeError, match=r"stage 'bad' failed \(exit 3\)[\s\S]*boom"):
        Pipeline(tmp_path, [bad], echo=lambda *_: None).run()
    assert not list(tmp_path.rglob("stage.json"))


def test_a_stage_records_wall_and_cpu_time_and_idle_time_is_not_cpu(tmp_path):
    """A stage that waits (as one paused or sharing the cores does) has wall time but almost no CPU time."""
    Pipeline(tmp_path, [Stage("wait", ["-c", "import time; time.sleep(0.6)"])], echo=lambda *_: None).run()
    record = json.loads(next(tmp_path.rglob("stage.json")).read_text())
    assert record["seconds"] >= 0.6 and 0 <= record["cpu_seconds"] < 0.4, record


def test_interrupted_stage_resumes_with_its_resume_arguments(tmp_path):
    script = ("import pathlib,sys; out=pathlib.Path(sys.argv[1]); "
              "(out/'partial').write_text('x') if len(sys.argv) == 2 else None; "
              "sys.exit(1 if len(sys.argv) == 2 else 0)")
    stage = Stage("s", ["-c", script, "{out}"], resume_argv=["--resume"], resume_marker="partial",
                  parse=lambda out: {"resumed_ok": 1})
    with pytest.raises(RuntimeError):
        Pipeline(tmp_path, [stage], echo=lambda *_: None).run()
    res = Pipeline(tmp_path, [stage], echo=lambda *_: None).run()
    marker = json.loads(next(tmp_path.rglob("stage.json")).read_text())
    assert res["s"] == {"resumed_ok": 1} and marker["resumed"] is True and marker["argv"][-1] == "--resume"


def _writer_stage(name, body, deps=(), pack=True):
    """A stage whose command runs ``body`` with ``out`` (its folder) and ``dep`` (its first dependency's)."""
    dep = ["{dep:" + deps[0] + "}"] if deps else []
    code = "import pathlib,sys; out=pathlib.Path(sys.argv[1]); dep=sys.argv[2:] and pathlib.Path(sys.argv[2]); " + body
    return Stage(name, ["-c", code, "{out}", *dep], deps=list(deps), pack=pack,
                 parse=lambda out: {"n": len(list(out.iterdir()))})


def test_a_packed_run_continues_on_another_machine_where_it_stopped(tmp_path):
    """pack keeps the records and what unfinished stages still read; restore takes them back by stage key, and
    the continued run runs only the unfinished stages, from the packed checkpoint."""
    counter = tmp_path / "runs.txt"
    count = ("c=pathlib.Path(sys.argv[-1]); c.write_text(c.read_text()+out.name[:2]+' ' if c.exists() else "
             "out.name[:2]+' '); ")
    big = "(out/'log.txt').write_text('x'*2000); (out/'ckpt.pth').write_bytes(b'w'*64); (out/'cfg.py').write_text('a=1'); "
    a = _writer_stage("a", count + big)
    a.argv.append(str(counter))
    b = Stage("b", ["-c", "import pathlib,sys; assert pathlib.Path(sys.argv[1]).read_bytes() == b'w'*64",
                    "{dep:a}/ckpt.pth"], deps=["a"])
    c = Stage("c", ["-c", "0"], deps=["a"])
    run1, pack, run2 = tmp_path / "machine1", tmp_path / "pack", tmp_path / "machine2"
    Pipeline(run1, [a], echo=lambda *_: None).run()  # the first machine stops after stage a
    n, size = Pipeline(run1, [a, b, c], echo=lambda *_: None).pack(pack, max_bytes=1000)
    packed = {p.relative_to(pack).as_posix().split("/", 1)[1] for p in pack.rglob("*") if p.is_file()}
    assert n == 1 and "ckpt.pth" in packed and "stage.json" in packed and "stage.log" in packed
    assert "log.txt" not in packed, "files over max_bytes are records nobody reads: left out"
    assert "cfg.py" not in packed, "config dumps are copies of what the log prints: left out"
    pipe = Pipeline(run2, [a, b, c], echo=lambda *_: None)
    assert pipe.restore(pack) == ["a"]
    res = pipe.run()
    assert counter.read_text() == "a- ", "stage a must not run again on the second machine"
    assert set(res) == {"a", "b", "c"}
    # once nothing unfinished reads the checkpoint, a pack leaves it out, also over the earlier pack
    Pipeline(run2, [a, b, c], echo=lambda *_: None).pack(pack, max_bytes=1000)
    assert not list(pack.rglob("ckpt.pth"))
    assert sorted(p.parent.name.split("-")[0] for p in pack.glob("*/stage.json")) == ["a", "b", "c"]
    assert not [p for p in pack.iterdir() if p.name.endswith((".packing", ".old"))]


def test_restore_takes_only_stages_of_the_same_key_and_skips_unpacked_data(tmp_path):
    data = _writer_stage("data", "(out/'img.png').write_bytes(b'p')", pack=False)
    run1, pack = tmp_path / "m1", tmp_path / "pack"
    Pipeline(run1, [data, _writer_stage("x", "0")], echo=lambda *_: None).run()
    n, _ = Pipeline(run1, [data, _writer_stage("x", "0")]).pack(pack)
    assert n == 1 and not list(pack.glob("data-*")), "generated data is made again, not carried"
    other = Pipeline(tmp_path / "m2", [data, _writer_stage("x", "1")])  # another command: another key
    assert other.restore(pack) == []


def test_study_stage_keys_do_not_depend_on_where_the_checkout_lives(tmp_path):
    """Recipes are passed as {run}/recipes/..., so a run folder elsewhere (another machine) has the same keys."""
    p = get_preset("quick")
    keys = []
    for where in ("one", "two"):
        run_dir = tmp_path / where
        stages = build_stages(p, run_dir)
        pipe = Pipeline(run_dir, stages)
        keys.append([pipe.stage_dir(s.name).name for s in stages])
        assert any("{run}/recipes/" in a for s in stages for a in s.argv)
    assert keys[0] == keys[1]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_stage_costs_weigh_like_the_work(preset, tmp_path):
    """Costs drive the remaining-time estimate: runs of the same size cost the same, the deeper teacher and the
    distilled runs more (a tweak run once cost 1.0 instead of ~60 seconds and the estimate read 46 hours)."""
    p = get_preset(preset)
    cost = {s.name: s.cost for s in build_stages(p, tmp_path)}
    plain = cost["cls-cosine-s0"]
    assert all(cost[f"cls-tweak-{v}-s0"] == plain for v in TWEAK_ROWS)
    assert cost["cls-teacher-s0"] > plain and cost["cls-distillation-s0"] > plain
    assert min(cost.values()) >= 5.0, "every stage costs at least seconds of process start-up"


def test_remaining_time_ignores_a_resumed_stage_and_idle_time(tmp_path):
    """A resumed stage ran only its rest: it must not make the seconds-per-cost rate look small. A stage's idle
    time (a paused study, other work on the machine) must not make it look large: the rate is CPU seconds."""
    script = ("import pathlib,sys; out=pathlib.Path(sys.argv[1]); "
              "(out/'partial').write_text('x') if len(sys.argv) == 2 else None; "
              "sys.exit(1 if len(sys.argv) == 2 else 0)")
    resumable = Stage("r", ["-c", script, "{out}"], cost=1000.0, resume_argv=["--resume"], resume_marker="partial",
                      threads=1)
    busy_then_idle = "import time; t = time.process_time()\nwhile time.process_time() - t < 1.1: pass\ntime.sleep(2)"
    stages = [resumable, Stage("a", ["-c", busy_then_idle], cost=1.0, threads=1),
              Stage("b", ["-c", "0"], cost=100.0, threads=1)]
    with pytest.raises(RuntimeError):
        Pipeline(tmp_path, stages, echo=lambda *_: None).run()
    lines = []
    Pipeline(tmp_path, stages, echo=lines.append).run()
    remaining = [line.rsplit("est. remaining ", 1)[1] for line in lines if "est. remaining" in line]
    # "a" took ~1.1 CPU seconds for 1 cost unit, so "b" (100 units, one core) is about two minutes away; counting
    # the resumed stage's short rest as 1000 units of work would have made it read 0:00:00, counting the idle
    # seconds of "a" about five minutes
    assert remaining[2][:5] in ("0:01:", "0:02:"), lines


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match=r"--preset: unknown preset 'huge'; accepted: \['full', 'quick'\]"):
        get_preset("huge")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_table_has_its_stages(preset, tmp_path):
    p = get_preset(preset)
    stages = build_stages(p, tmp_path) + lr_trace_stages("data-fashion-scenes", p.model)
    names = {s.name for s in stages}
    Pipeline(tmp_path, stages)  # unique names
    for seed in p.seeds:
        assert {cls_stage_name(r, seed) for r in STACKED_ROWS} <= names
        assert {f"cls-tweak-{v}-s{seed}" for v in TWEAK_ROWS} <= names
    for epochs, seeds in p.ladder:
        assert {budget_stage_name(p, r, s, epochs) for r in LADDER_ROWS for s in seeds} <= names
    for epochs, seeds in p.standard_budgets:
        assert {budget_stage_name(p, "B-standard", s, epochs) for s in seeds} <= names
    for seed in p.transfer_seeds:
        for r in transfer_rows(p):
            assert {f"det-d2-{transfer_slug(r)}-s{seed}", f"seg-mmseg-{transfer_slug(r)}-s{seed}"} <= names
        mmdet = {n for n in names if n.startswith("det-mmdet-") and n.endswith(f"-s{seed}")}
        assert mmdet == {f"det-mmdet-{transfer_slug(r)}-s{seed}" for r in transfer_rows(p)
                         if r == RANDOM_ROW or r.rpartition(" @")[0] in p.mmdet_transfer_rows}
    assert {"lr-trace-timm_ext", "lr-trace-mm_ext", "lr-trace-d2_ext"} <= names


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_ladder_runs_fit_their_schedule_to_their_budget(preset, tmp_path):
    """A budget's point is a run of that length (Li et al. 2020), not an epoch of a longer run: every ladder stage's
    recipe has the budget's epochs and its step milestones inside them; the base budget reuses the tables' runs;
    the stack rows that transfer are the longest budget's."""
    import yaml

    p = get_preset(preset)
    stages = {s.name: s for s in build_stages(p, tmp_path)}
    for epochs, seeds in p.ladder + p.standard_budgets:
        for row in ["B-standard", *LADDER_ROWS]:
            name = budget_stage_name(p, row, seeds[0], epochs)
            if name not in stages:
                continue
            recipe_arg = stages[name].argv[stages[name].argv.index("--recipe") + 1]
            recipe = yaml.safe_load((tmp_path / recipe_arg.removeprefix("{run}/")).read_text())
            assert recipe["epochs"] == epochs == recipes(p, epochs)[row]["epochs"]
            assert all(0 < m <= epochs for m in recipe["step_milestones"])
            assert ("--train-clean-subset" in stages[name].argv and "--ece-bins" in stages[name].argv)
    assert budget_stage_name(p, "+ cosine", 0, p.epochs) == cls_stage_name("+ cosine", 0)
    longest = max(e for e, _ in p.ladder)
    assert transfer_rows(p)[f"+ mixup @{longest}"][0] == budget_stage_name(p, "+ mixup", p.seeds[0], longest)


def test_stages_pin_their_threads(tmp_path):
    """Classification holds the machine's two threads; detectors and segmenters one each (two at a time)."""
    p = get_preset("full")
    for s in build_stages(p, tmp_path) + lr_trace_stages("data-fashion-scenes", p.model):
        assert s.threads == (p.threads if s.name.startswith("cls-") else 1), s.name


def test_cli_lists_stages(capsys, tmp_path):
    from plugins.reproduce.cli import main

    assert main(["--preset", "quick", "--out", str(tmp_path), "--list"]) == 0
    out = capsys.readouterr().out
    assert "cls-teacher-s0" in out and "lr-trace-d2_ext" in out
    assert main(["--preset", "nope", "--list"]) == 2
    assert sys.executable


def test_transfer_runs_vary_the_detector_seed_over_the_first_seeds_backbones(tmp_path):
    """Every transfer row is repeated per detector seed with the same backbone (seed 0's export), and the random
    control row loads no checkpoint in any framework."""
    p = get_preset("full")
    assert len(p.transfer_seeds) >= 3
    stages = {s.name: s for s in build_stages(p, tmp_path)}
    row = f"+ label smoothing @{p.longest}"
    for seed in p.transfer_seeds:
        for prefix in ("det-mmdet", "det-d2", "seg-mmseg"):
            st = stages[f"{prefix}-{transfer_slug(row)}-s{seed}"]
            assert st.deps[0] == budget_stage_name(p, "+ label smoothing", p.seeds[0], p.longest), st.deps
            assert st.argv[-1] in (f"randomness.seed={seed}", str(seed)), st.argv[-2:]
            control = stages[f"{prefix}-{transfer_slug(RANDOM_ROW)}-s{seed}"]
            assert not any(d.startswith("cls-") for d in control.deps), control.deps
            assert not any("backbone.pth" in a for a in control.argv)
            if prefix == "det-d2":
                assert control.argv[control.argv.index("TRICKS.TIMM.CHECKPOINT") + 1] == ""
            else:
                assert "model.backbone.checkpoint=None" in control.argv


def test_classification_stages_resume_and_students_depend_on_their_teacher(tmp_path):
    # A classification stage interrupted mid-run must resume from timm's last.pth.tar, and a distillation student's
    # cache key must follow its teacher (a retrained teacher reruns the students).
    stages = {s.name: s for s in build_stages(get_preset("full"), tmp_path)}
    cls = [s for n, s in stages.items() if n.startswith("cls-")]
    assert cls and all(s.resume_argv == ["--resume", "{out}/train/last.pth.tar"]
                       and s.resume_marker == "train/last.pth.tar" for s in cls)
    for seed in (0, 1, 2):  # one teacher, trained for the longest budget, for every student
        for student in (f"cls-distillation-s{seed}", f"cls-distillation-mixup-s{seed}", f"cls-distillation-e32-s{seed}"):
            assert stages[student].deps == ["cls-teacher-s0"]
        assert stages[f"cls-cosine-s{seed}"].deps == []
    assert "cls-teacher-s1" not in stages


@pytest.mark.parametrize("preset", ["quick", "full"])
def test_transfer_stages_give_every_adapter_the_same_recipe_file(tmp_path, preset):
    """The detectors and the segmenter get recipe files, not converted numbers: one file for the three detector
    stages of every row and seed, one for the segmenter, whose plans at the scenes' epoch are the intended
    schedules in iterations."""
    from plugins.recipe import Recipe
    from plugins.recipe.plan import LrSchedule
    from plugins.reproduce.study import transfer_iters_per_epoch

    p = get_preset(preset)
    used = {"det": set(), "seg": set()}
    for st in build_stages(p, tmp_path):
        if not st.name.startswith(("det-", "seg-")):
            continue
        spec = st.argv[st.argv.index("--recipe") + 1]
        assert spec.startswith("{run}/recipes/"), spec
        used[st.name[:3]].add(spec)
        text = " ".join(st.argv)
        for converted in ("lr=", "param_scheduler", "SOLVER.BASE_LR", "SOLVER.STEPS", "WARMUP"):
            assert converted not in text, (st.name, converted)
    assert len(used["det"]) == len(used["seg"]) == 1 and used["det"] != used["seg"]
    det, seg = (Recipe.load(next(iter(used[k])).replace("{run}", str(tmp_path))) for k in ("det", "seg"))
    per_epoch, n = transfer_iters_per_epoch(p), p.det_iters
    assert det.lr_schedule(per_epoch, total_steps=n) == LrSchedule(
        "step", n, p.det_warmup_iters or n // 10, milestones=(round(0.75 * n), round(0.9 * n)), gamma=0.1)
    assert seg.lr_schedule(per_epoch, total_steps=p.seg_iters) == LrSchedule("cosine", p.seg_iters, 0, 0.01)
    assert det.scaled_lr() == seg.scaled_lr() == p.transfer_lr




def test_stage_keys_follow_the_code_not_its_docstrings_comments_or_wrapping(tmp_path, monkeypatch):
    from plugins.reproduce import pipeline

    package = tmp_path / "pkg"
    package.mkdir()
    module = package / "m.py"
    monkeypatch.setattr(pipeline, "_PROJECT_ROOT", tmp_path)
    module.write_text('"""Doc."""\n\n\ndef f(x):\n    """Twice x."""\n    return 2 * x  # double\n')
    first = pipeline.source_hash("pkg")
    module.write_text('"""Doc,\nrewrapped."""\n\n\ndef f(x):\n    """Twice\n    x."""\n    return (2\n            * x)\n')
    assert pipeline.source_hash("pkg") == first
    module.write_text('"""Doc."""\n\n\ndef f(x):\n    """Twice x."""\n    return 3 * x\n')
    changed = pipeline.source_hash("pkg")
    assert changed != first
    (package / "r.yaml").write_text("a: 1\n")  # a shipped config counts byte for byte
    assert pipeline.source_hash("pkg") != changed


def test_jobs_run_one_core_stages_side_by_side_and_keep_dependencies(tmp_path):
    """With jobs=2 on 2 cores, two 1-thread stages overlap; a 2-thread stage runs alone; a dependent stage starts
    only after its dependency finished; each stage's OMP_NUM_THREADS is its threads."""
    log = tmp_path / "log.txt"
    script = ("import os,sys,time; open(sys.argv[1],'a').write(f'start {sys.argv[2]} {time.time()} "
              "{os.environ[\"OMP_NUM_THREADS\"]}\\n'); time.sleep(0.8); "
              "open(sys.argv[1],'a').write(f'end {sys.argv[2]} {time.time()}\\n')")

    def stage(name, threads, deps=()):
        return Stage(name, ["-c", script, str(log), name], threads=threads, deps=list(deps))

    stages = [stage("a", 1), stage("b", 1), stage("wide", 2), stage("c", 1, deps=["wide"])]
    Pipeline(tmp_path / "run", stages, echo=lambda *_: None).run(jobs=2, cores=2)
    events = {}
    for line in log.read_text().splitlines():
        kind, name, t, *rest = line.split()
        events[(kind, name)] = float(t)
        if kind == "start":
            assert rest == ["2" if name == "wide" else "1"], line
    assert events[("start", "b")] < events[("end", "a")]  # side by side
    assert events[("start", "wide")] >= max(events[("end", "a")], events[("end", "b")])  # alone
    assert events[("start", "c")] >= events[("end", "wide")]  # after its dependency


def test_jobs_stop_after_a_failure_without_losing_the_finished_stages(tmp_path):
    ok = Stage("ok", ["-c", "import time; time.sleep(0.5)"], threads=1)
    bad = Stage("bad", ["-c", "import sys; sys.exit(4)"], threads=1)
    later = Stage("later", ["-c", "0"], threads=1, deps=["bad"])
    with pytest.raises(RuntimeError, match=r"stage 'bad' failed \(exit 4\)"):
        Pipeline(tmp_path, [ok, bad, later], echo=lambda *_: None).run(jobs=2, cores=2)
    finished = {p.parent.name.rsplit("-", 1)[0] for p in tmp_path.rglob("stage.json")}
    assert finished == {"ok"}
