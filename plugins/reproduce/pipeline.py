"""Stages cached by a hash of their inputs, run as subprocesses, with an overall progress display.

A stage is one command (a training or an evaluation) with its own output folder
``<run>/stages/<name>-<hash>/``. The hash covers the command line, the hashes of the stages it depends on and
the sources of the project packages it runs, so a rerun with nothing changed skips every finished stage, and
a change reruns what it affects (an edit in d2_ext reruns the Detectron2 stages, not the classification).
A stage is finished when its ``stage.json`` exists (written atomically, last); a folder without it is an
interrupted stage, which is resumed when its command supports it or started over.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_SOURCE_PACKAGES = ("plugins", "timm_ext", "mm_ext", "d2_ext")
PACK_MAX_BYTES = 1_000_000
_CHECKPOINT_SUFFIXES = {".pth", ".pt", ".pkl", ".ckpt"}
# MMEngine dumps the resolved config as Python next to its log (which prints it too): a copy, not a record
_NOT_PACKED_SUFFIXES = _CHECKPOINT_SUFFIXES | {".py", ".pyc"}


def source_hash(package: str) -> str:
    """Hash of one project package's Python sources and shipped configs (what a stage's result depends on).

    ``plugins/reproduce`` (this study's own code: presets, report) is left out: a stage's command already
    carries every size it uses.
    """
    h = hashlib.sha256()
    for path in sorted((_PROJECT_ROOT / package).rglob("*")):
        if path.suffix in {".py", ".yaml"} and "__pycache__" not in path.parts and "reproduce" not in path.parts:
            h.update(str(path.relative_to(_PROJECT_ROOT)).encode())
            h.update(_code_of(path))
    return h.hexdigest()[:16]


def _code_of(path: Path) -> bytes:
    """What of a source file a result depends on: a Python file's syntax tree without docstrings (so rewrapping a
    docstring, a comment or a line leaves the stage keys as they are), a config file's bytes."""
    if path.suffix != ".py":
        return path.read_bytes()
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError:
        return path.read_bytes()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


@dataclass
class Stage:
    """One cached step of the study.

    Args:
        name: unique, file-system safe name (``cls-D-efficient-s0``).
        argv: the command, with ``{out}`` standing for the stage's output folder, ``{dep:NAME}`` for the
            output folder of the stage NAME it depends on and ``{run}`` for the run folder (so that a stage's key
            does not depend on where the checkout lives).
        cost: rough relative cost, used only for the remaining-time estimate.
        resume_argv: extra arguments that resume an interrupted run (``{out}`` allowed), or None.
        resume_marker: file in the output folder whose presence means the run can be resumed.
        parse: function(out_dir) -> dict of metrics, stored in stage.json.
        sources: the project packages the command runs (default all four); a change elsewhere keeps it cached.
        pack: whether ``Pipeline.pack`` keeps the stage (False for generated data, which is made again in seconds
            rather than carried).
        threads: the torch/OpenMP threads of its process (``OMP_NUM_THREADS``, part of the key: a float sum's
            order, hence the result's last bits, depends on it), and the cores it holds when ``Pipeline.run``
            runs stages side by side (``jobs`` > 1); 0: the process's default, the whole machine.
    """

    name: str
    argv: list[str]
    cost: float = 1.0
    deps: list[str] = field(default_factory=list)
    resume_argv: list[str] | None = None
    resume_marker: str | None = None
    parse: Callable[[Path], dict] | None = None
    env: dict[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = _SOURCE_PACKAGES
    pack: bool = True
    threads: int = 0


def _atomic_write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _fmt(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Pipeline:
    """Runs stages in order, skipping cached ones, and prints ``stage i of n, elapsed, remaining``."""

    def __init__(self, run_dir: Path, stages: list[Stage], python: str = sys.executable, echo=print):
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got duplicates in {names}")
        self.run_dir = Path(run_dir)
        self.stages = stages
        self.python = python
        self.echo = echo
        unknown = {p for s in stages for p in s.sources} - set(_SOURCE_PACKAGES)
        if unknown:
            raise ValueError(f"stage sources must be among {_SOURCE_PACKAGES}, got {sorted(unknown)}")
        self._src = {package: source_hash(package) for package in _SOURCE_PACKAGES}
        self._dirs: dict[str, Path] = {}
        for stage in stages:  # a stage's key needs its dependencies' folders, so the order matters
            unknown = [d for d in stage.deps if d not in self._dirs]
            if unknown:
                raise ValueError(f"stage {stage.name!r} depends on {unknown}, which must come earlier")
            self._dirs[stage.name] = self.run_dir / "stages" / f"{stage.name}-{self._key(stage)}"
        self.results: dict[str, dict] = {}
        self.failed: dict[str, str] = {}

    def stage_dir(self, name: str) -> Path:
        return self._dirs[name]

    def _key(self, stage: Stage) -> str:
        payload = {"argv": stage.argv, "deps": [self._dirs[d].name for d in stage.deps],
                   "env": stage.env, "src": [self._src[p] for p in stage.sources]}
        if stage.threads:
            payload["threads"] = stage.threads
        payload = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def _expand(self, args: list[str], out: Path) -> list[str]:
        res = []
        for a in args:
            a = a.replace("{out}", str(out)).replace("{run}", str(self.run_dir))
            for d in re.findall(r"\{dep:([^}]+)\}", a):
                a = a.replace("{dep:" + d + "}", str(self._dirs[d]))
            res.append(a)
        return res

    def run(self, jobs: int = 1, cores: int | None = None, keep_going: bool = False) -> dict[str, dict]:
        """Runs every stage that is not cached, in order; with ``jobs`` > 1, up to ``jobs`` at once while their
        ``threads`` fit in ``cores`` (default: this machine's), each started once its dependencies are done.

        A failed stage stops the run after the stages running beside it have finished; with ``keep_going`` the
        run goes on without it and the stages that depend on it, and ``self.failed`` says why each was left
        out (the last line of its log, or the failed stage it needed)."""
        cores = cores or os.cpu_count() or 1
        # the estimate: CPU seconds per unit of cost over the finished stages (what pauses and other work on the
        # machine do not inflate), times the cost left, each stage's over the cores it keeps busy with its
        # neighbours (a 2-thread stage alone, or two 1-thread stages side by side, keep 2 busy)
        width = {s.name: min(cores, max(1, jobs) * (s.threads or cores)) for s in self.stages}
        progress = {"done_cost": 0.0, "spent": 0.0, "width": width,
                    "left": sum(s.cost / width[s.name] for s in self.stages)}
        t0 = time.time()
        pending = list(enumerate(self.stages, 1))
        running: dict[str, tuple] = {}
        failure = None
        while pending or running:
            started = False
            for item in list(pending):
                i, stage = item
                out = self._dirs[stage.name]
                if (out / "stage.json").exists():
                    self.results[stage.name] = json.loads((out / "stage.json").read_text())["metrics"]
                    self.echo(f"[stage {i}/{len(self.stages)}] {stage.name}: cached ({out.name})")
                    progress["left"] -= stage.cost / width[stage.name]
                    pending.remove(item)
                    continue
                if failure is not None:
                    break
                lost = [d for d in stage.deps if d in self.failed]
                if lost:
                    self.failed[stage.name] = f"not run: it needs {lost[0]}, which failed"
                    self.echo(f"[stage {i}/{len(self.stages)}] {stage.name}: skipped ({self.failed[stage.name]})")
                    pending.remove(item)
                    continue
                if any(d not in self.results for d in stage.deps):
                    if jobs <= 1:
                        break
                    continue
                held = sum(r[1].threads or cores for r in running.values())
                if running and (len(running) >= jobs or held + (stage.threads or cores) > cores):
                    break
                pending.remove(item)
                running[stage.name] = (i, stage, *self._start(i, stage, t0, progress))
                started = True
                if jobs <= 1:
                    break
            if not running:
                if pending and failure is None and not started:
                    raise RuntimeError(f"stages {[s.name for _, s in pending]} wait on stages that did not run")
                if failure is not None or not pending:
                    break
                continue
            finished = self._wait(running)
            i, stage, proc, log, s0, argv, resumed = running.pop(finished)
            error = self._finish(stage, proc, log, s0, argv, resumed, progress)
            if error is not None and keep_going:
                tail = [line for line in (self._dirs[stage.name] / "stage.log").read_text().splitlines()
                        if line.strip()]
                self.failed[stage.name] = f"failed (exit {proc.returncode}): {tail[-1] if tail else ''}"[:400]
                self.echo(f"    {stage.name} {self.failed[stage.name]}; going on without it")
            elif error is not None and failure is None:
                failure = error
        if failure is not None:
            raise failure
        return self.results

    def _start(self, i: int, stage: Stage, t0: float, progress: dict):
        out = self._dirs[stage.name]
        rate = progress["spent"] / progress["done_cost"] if progress["done_cost"] and progress["spent"] > 1 else None
        remaining = "?" if rate is None else _fmt(rate * max(0.0, progress["left"]))
        self.echo(f"[stage {i}/{len(self.stages)}] {stage.name}: running | elapsed {_fmt(time.time() - t0)} | "
                  f"est. remaining {remaining}")
        out.mkdir(parents=True, exist_ok=True)
        argv = self._expand(stage.argv, out)
        resumed = bool(stage.resume_argv and stage.resume_marker and (out / stage.resume_marker).exists())
        if resumed:
            argv += self._expand(stage.resume_argv, out)
            self.echo(f"    resuming the interrupted run in {out}")
        cmd = [self.python, *argv]
        env = {**os.environ, **dict(zip(stage.env, self._expand(list(stage.env.values()), out), strict=True))}
        if stage.threads:
            env.update({"OMP_NUM_THREADS": str(stage.threads), "MKL_NUM_THREADS": str(stage.threads)})
        log = open(out / "stage.log", "a")  # noqa: SIM115 (closed in _finish)
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=_PROJECT_ROOT, env=env)
        return proc, log, time.time(), argv, resumed

    @staticmethod
    def _wait(running: dict) -> str:
        """The name of a running stage whose process ended (reaped here with its own CPU time, ``proc.cpu``)."""
        while True:
            for name, entry in running.items():
                proc = entry[2]
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    proc.cpu = usage.ru_utime + usage.ru_stime
                    return name
            time.sleep(0.2)

    def _finish(self, stage: Stage, proc, log, s0: float, argv: list[str], resumed: bool, progress: dict):
        out = self._dirs[stage.name]
        dt = time.time() - s0
        log.close()
        if proc.returncode != 0:
            tail = (out / "stage.log").read_text().splitlines()[-25:]
            return RuntimeError(f"stage {stage.name!r} failed (exit {proc.returncode}); log: {out / 'stage.log'}\n"
                                + "\n".join(tail))
        metrics = stage.parse(out) if stage.parse else {}
        record = {"name": stage.name, "argv": argv, "seconds": round(dt, 1), "cpu_seconds": round(proc.cpu, 1),
                  "resumed": resumed,
                  "threads": stage.threads or None, "metrics": metrics}
        _atomic_write_json(out / "stage.json", record)
        self.results[stage.name] = metrics
        progress["left"] -= stage.cost / progress["width"][stage.name]
        if not resumed:  # a resumed stage ran only its rest: it would skew the seconds-per-cost rate
            progress["spent"] += proc.cpu
            progress["done_cost"] += stage.cost
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, int | float))
        self.echo(f"    {stage.name} done in {_fmt(dt)}" + (f": {shown}" if shown else ""))
        return None

    def finished(self) -> list[Stage]:
        return [s for s in self.stages if (self._dirs[s.name] / "stage.json").exists()]

    def pack(self, dest: Path, max_bytes: int = PACK_MAX_BYTES) -> tuple[int, int]:
        """Copies the finished stages' records into ``dest/<name>-<hash>/``, so that a run can span machines.

        Kept: every file of at most ``max_bytes`` that is not a checkpoint or a Python config dump
        (``stage.json``, logs, metrics, csv records), and any file an unfinished stage still reads through
        ``{dep:NAME}/<file>`` (a backbone to transfer), whatever its size. A stage packed before is replaced whole. Returns (stages packed, bytes
        written).
        """
        dest = Path(dest)
        finished = {s.name for s in self.finished()}
        needed: set[Path] = set()
        for stage in self.stages:
            if stage.name in finished:
                continue
            for arg in [*stage.argv, *stage.env.values()]:
                for dep, rel in re.findall(r"\{dep:([^}]+)\}/(\S+)", arg):
                    needed.add(self._dirs[dep] / rel)
        n_stages = n_bytes = 0
        for stage in self.stages:
            if stage.name not in finished or not stage.pack:
                continue
            src = self._dirs[stage.name]
            files = [f for f in sorted(src.rglob("*")) if f.is_file() and (f in needed or (
                f.suffix not in _NOT_PACKED_SUFFIXES and f.stat().st_size <= max_bytes))]
            # built aside, then swapped in: a stage packed again loses what is no longer needed (a backbone
            # whose transfers have all finished), and an interrupted pack leaves the previous one whole
            staging = dest / (src.name + ".packing")
            shutil.rmtree(staging, ignore_errors=True)
            for f in files:
                target = staging / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
                n_bytes += f.stat().st_size
            staging.mkdir(parents=True, exist_ok=True)
            old = dest / (src.name + ".old")
            if (dest / src.name).exists():
                os.replace(dest / src.name, old)
            os.replace(staging, dest / src.name)
            shutil.rmtree(old, ignore_errors=True)
            n_stages += 1
        return n_stages, n_bytes

    def restore(self, source: Path) -> list[str]:
        """Copies finished stages packed under ``source`` (``pack``) that this run lacks; returns their names.

        Only a folder whose name (stage name and key) matches one of this run's stages is taken: a stage
        packed from other sources or sizes has another key and is left alone.
        """
        restored = []
        for stage in self.stages:
            out, packed = self._dirs[stage.name], Path(source) / self._dirs[stage.name].name
            if (out / "stage.json").exists() or not (packed / "stage.json").exists():
                continue
            tmp = out.with_name(out.name + ".restoring")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(packed, tmp)
            shutil.rmtree(out, ignore_errors=True)  # an interrupted attempt of the same stage
            os.replace(tmp, out)
            restored.append(stage.name)
        return restored
