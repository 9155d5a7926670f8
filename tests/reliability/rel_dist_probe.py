"""Runs one adapter's command in this process and records what the distributed tests check, per rank.

Usage (under ``torchrun``, or plain ``python`` for the single-process reference)::

    python tests/reliability/rel_dist_probe.py timm|mm|d2 PROBE_DIR ARG...

``ARG...`` go to ``timm_ext.train.main``, ``mm_ext.train.main`` or ``d2_ext.train_net.cli``. The probe writes
``PROBE_DIR/rank<R>.json`` (its own file, outside the run's output folder) with:

- ``writes``: every file this process opened for writing, renamed onto, or ``torch.save``-d to (an audit hook
  sees ``open``, ``os.open`` and ``os.rename`` / ``os.replace`` from Python and C code alike);
- ``groups``: the optimizer's param groups (weight decay and the parameter names, DDP prefix removed);
- ``losses`` / ``lrs``: per update, this process's loss (Detectron2: rank 0's all-rank mean) and every
  group's lr; ``batch_sizes``: images per training forward on this process;
- ``wrapped``: the class of the trained model; for timm_ext also the teacher's class, whether any teacher
  parameter requires or received a gradient, and whether its weights changed;
- ``status``: the command's exit status.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
RECORD: dict = {"writes": [], "groups": [], "losses": [], "lrs": [], "batch_sizes": [], "wrapped": {}}


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str | bytes):
        mode, flags = args[1], args[2]
        writing = any(c in mode for c in "wax+") if mode else bool(flags & WRITE_FLAGS)
        if writing:
            RECORD["writes"].append(os.path.abspath(os.fsdecode(args[0])))
    elif event == "os.rename":
        RECORD["writes"].append(os.path.abspath(os.fsdecode(args[1])))


def _record_saves() -> None:
    import torch

    original = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, str | os.PathLike):
            RECORD["writes"].append(os.path.abspath(os.fspath(f)))
        return original(obj, f, *args, **kwargs)

    torch.save = save


def _groups(optimizer, model) -> list[dict]:
    names = {id(p): n.removeprefix("module.") for n, p in model.named_parameters()}
    return [{"weight_decay": g.get("weight_decay"), "params": [names.get(id(p), "?") for p in g["params"]]}
            for g in optimizer.param_groups]


def _count_batch(module) -> None:
    def pre_hook(module, args, kwargs):
        if not module.training:
            return
        inputs = args[0] if args else next(iter(kwargs.values()))
        if isinstance(inputs, dict):  # MMEngine: dict(inputs=..., data_samples=...)
            inputs = inputs["inputs"]
        RECORD["batch_sizes"].append(len(inputs))

    module.register_forward_pre_hook(pre_hook, with_kwargs=True)


def _state_hash(module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode() + value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def run_timm(argv: list[str]) -> int:
    from timm_ext import _timm_run, train

    build_optimizer, build_task = _timm_run.build_optimizer, _timm_run.build_task
    seen = {}

    def recording_build_optimizer(args, model):
        optimizer = build_optimizer(args, model)
        RECORD["groups"] = _groups(optimizer, model)
        _count_batch(model)
        seen["optimizer"] = optimizer
        return optimizer

    def recording_build_task(*args, **kwargs):
        task = build_task(*args, **kwargs)
        forward = task.forward
        teacher = getattr(getattr(task, "teacher", None), "model", None)

        def recording_forward(inputs, target):
            if teacher is not None and "teacher_hash_before" not in RECORD["wrapped"]:
                RECORD["wrapped"]["teacher_hash_before"] = _state_hash(teacher)
            RECORD["lrs"].append([g["lr"] for g in seen["optimizer"].param_groups])
            out = forward(inputs, target)
            RECORD["losses"].append(float(out["loss"]))
            RECORD["wrapped"]["model"] = type(task.get_trainable_module()).__name__
            if teacher is not None:
                params = list(teacher.parameters())
                RECORD["wrapped"].update(
                    teacher=type(task.teacher).__name__,
                    teacher_requires_grad=any(p.requires_grad for p in params),
                    teacher_got_grad=RECORD["wrapped"].get("teacher_got_grad", False)
                    or any(p.grad is not None for p in params),
                    teacher_hash_after=_state_hash(teacher),
                )
            return out

        task.forward = recording_forward
        return task

    _timm_run.build_optimizer, _timm_run.build_task = recording_build_optimizer, recording_build_task
    return train.main(argv)


def run_mm(argv: list[str]) -> int:
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    from mm_ext import train

    @HOOKS.register_module()
    class RelProbeHook(Hook):
        def before_train(self, runner):
            model = runner.model
            RECORD["groups"] = _groups(runner.optim_wrapper.optimizer, model)
            RECORD["wrapped"]["model"] = type(model).__name__
            _count_batch(getattr(model, "module", model).backbone)

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            RECORD["lrs"].append([g["lr"] for g in runner.optim_wrapper.optimizer.param_groups])

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            RECORD["losses"].append(float(outputs["loss"]))

    load_config = train.load_config

    def probed_config(args):
        cfg = load_config(args)
        cfg.custom_hooks = [*cfg.custom_hooks, dict(type="RelProbeHook")]
        return cfg

    train.load_config = probed_config
    return train.main(argv)


def run_d2(argv: list[str]) -> int:
    from detectron2.engine import HookBase

    from d2_ext import train_net, trainer

    class RelProbe(HookBase):
        def before_train(self):
            model = self.trainer.model
            RECORD["groups"] = _groups(self.trainer.optimizer, model)
            RECORD["wrapped"]["model"] = type(model).__name__
            _count_batch(getattr(model, "module", model).backbone)

        def before_step(self):
            RECORD["lrs"].append([g["lr"] for g in self.trainer.optimizer.param_groups])

        def after_step(self):
            latest = self.trainer.storage.latest()
            if "total_loss" in latest:
                RECORD["losses"].append(latest["total_loss"][0])

    build_hooks = trainer.Trainer.build_hooks
    trainer.Trainer.build_hooks = lambda self: [*build_hooks(self), RelProbe()]
    try:
        train_net.cli(argv)
    except SystemExit as stop:
        return stop.code or 0
    return 0


def main() -> None:
    adapter, probe_dir, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    rank = int(os.environ.get("RANK", "0"))
    sys.addaudithook(_audit)
    _record_saves()
    status = {"timm": run_timm, "mm": run_mm, "d2": run_d2}[adapter](argv)
    RECORD["status"] = status
    os.makedirs(probe_dir, exist_ok=True)
    with open(os.path.join(probe_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(RECORD, handle)
    sys.exit(0 if status == 0 else 1)


if __name__ == "__main__":
    main()
