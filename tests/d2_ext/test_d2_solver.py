"""d2_ext.Trainer's optimizer and lr scheduler against plugins' formulas and Detectron2's own builders."""

import pytest

pytest.importorskip("detectron2")

import torch  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import SimpleTrainer, hooks  # noqa: E402
from detectron2.solver import build_lr_scheduler, build_optimizer  # noqa: E402
from torch import nn  # noqa: E402

from d2_ext import Trainer, add_tricks_config  # noqa: E402
from plugins.tricks.lr_schedule import scale_lr, warmup_cosine_factor  # noqa: E402
from plugins.tricks.no_bias_decay import no_bias_decay_param_groups  # noqa: E402

MAX_ITER = 40
WARMUP = 7
BASE_LRS = (0.1, 0.01)


def _cfg(**tricks):
    cfg = get_cfg()
    add_tricks_config(cfg)
    cfg.SOLVER.MAX_ITER = MAX_ITER
    cfg.SOLVER.BASE_LR = BASE_LRS[0]
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.WARMUP_ITERS = 5
    cfg.SOLVER.STEPS = (20, 30)
    for key, value in tricks.items():
        cfg.TRICKS[key] = value
    return cfg


class _TinyDetector(nn.Module):
    """conv + BN + linear, returning a loss dict like a Detectron2 model."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, batch):
        x = self.norm(self.conv(batch)).mean(dim=(2, 3))
        return {"loss": self.head(x).pow(2).mean()}


def _two_group_optimizer(model):
    return torch.optim.SGD(
        [
            {"params": list(model.conv.parameters()), "lr": BASE_LRS[0]},
            {"params": list(model.norm.parameters()) + list(model.head.parameters()), "lr": BASE_LRS[1]},
        ],
        lr=BASE_LRS[0],
        momentum=0.9,
    )


class _RecordLR(hooks.HookBase):
    def __init__(self):
        self.lrs = []

    def before_step(self):
        self.lrs.append([group["lr"] for group in self.trainer.optimizer.param_groups])


def _lrs_of_training(scheduler_builder, cfg):
    """Run Detectron2's SimpleTrainer with its LRScheduler hook; return every group's lr at every iteration."""
    torch.manual_seed(0)
    model = _TinyDetector()
    optimizer = _two_group_optimizer(model)
    scheduler = scheduler_builder(cfg, optimizer)
    data = iter(lambda: torch.randn(2, 3, 6, 6), None)
    trainer = SimpleTrainer(model, data, optimizer)
    recorder = _RecordLR()
    trainer.register_hooks([hooks.LRScheduler(optimizer, scheduler), recorder])
    trainer.train(0, MAX_ITER)
    logged = [value for value, _ in trainer.storage.history("lr").values()]
    return recorder.lrs, logged


def test_warmup_cosine_lr_at_every_iteration_equals_plugin_schedule():
    cfg = _cfg(LR_SCHEDULE="warmup_cosine", WARMUP_ITERS=WARMUP, MIN_LR_RATIO=0.05)
    lrs, logged = _lrs_of_training(Trainer.build_lr_scheduler, cfg)
    assert len(lrs) == MAX_ITER
    for k, group_lrs in enumerate(lrs):  # Detectron2 iteration k is update k + 1
        expected = [base * warmup_cosine_factor(k + 1, MAX_ITER, WARMUP, 0.05) for base in BASE_LRS]
        torch.testing.assert_close(group_lrs, expected, rtol=1e-12, atol=0.0, msg=f"iteration {k}")
    # the lr Detectron2 itself logs for each iteration (of the group with the most parameters: group 1)
    torch.testing.assert_close(logged, [group[1] for group in lrs], rtol=0.0, atol=0.0, msg="logged lr")
    torch.testing.assert_close(lrs[WARMUP - 1][0], BASE_LRS[0], rtol=1e-12, atol=0.0, msg="warmup end")
    torch.testing.assert_close(lrs[-1][1], 0.05 * BASE_LRS[1], rtol=1e-12, atol=0.0, msg="last iteration")


def test_default_schedule_is_detectron2s():
    cfg = _cfg()
    ours, _ = _lrs_of_training(Trainer.build_lr_scheduler, cfg)
    theirs, _ = _lrs_of_training(build_lr_scheduler, cfg)
    torch.testing.assert_close(ours, theirs, rtol=0.0, atol=0.0, msg="TRICKS.LR_SCHEDULE '' vs Detectron2")


def test_warmup_cosine_scheduler_state_round_trip():
    cfg = _cfg(LR_SCHEDULE="warmup_cosine", WARMUP_ITERS=WARMUP)
    model = _TinyDetector()
    optimizer = _two_group_optimizer(model)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    for _ in range(11):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    resumed_optimizer = _two_group_optimizer(model)
    resumed = Trainer.build_lr_scheduler(cfg, resumed_optimizer)
    resumed.load_state_dict(state)
    for k in range(12, MAX_ITER):
        optimizer.step()
        scheduler.step()
        resumed_optimizer.step()
        resumed.step()
        torch.testing.assert_close(
            [g["lr"] for g in resumed_optimizer.param_groups],
            [g["lr"] for g in optimizer.param_groups],
            rtol=0.0, atol=0.0, msg=f"resumed iteration {k}",
        )


@pytest.mark.parametrize("no_bias_decay", [False, True])
def test_linear_scaling(no_bias_decay):
    cfg = _cfg(BASE_BATCH_SIZE=16, NO_BIAS_DECAY=no_bias_decay)
    cfg.SOLVER.IMS_PER_BATCH = 6
    optimizer = Trainer.build_optimizer(cfg, _TinyDetector())
    expected = BASE_LRS[0] * 6 / 16  # the paper: eta = base_lr * b / base_b
    torch.testing.assert_close(scale_lr(BASE_LRS[0], 6, 16), expected, rtol=1e-15, atol=0.0, msg="plugin")
    for index, group in enumerate(optimizer.param_groups):
        torch.testing.assert_close(group["lr"], expected, rtol=1e-15, atol=0.0, msg=f"group {index}")


def test_no_linear_scaling_by_default():
    cfg = _cfg()
    cfg.SOLVER.IMS_PER_BATCH = 6
    optimizer = Trainer.build_optimizer(cfg, _TinyDetector())
    assert {group["lr"] for group in optimizer.param_groups} == {BASE_LRS[0]}


def test_no_bias_decay_groups():
    cfg = _cfg(NO_BIAS_DECAY=True)
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.MOMENTUM = 0.8
    cfg.SOLVER.NESTEROV = True
    model = _TinyDetector()
    model.head.bias.requires_grad_(False)
    optimizer = Trainer.build_optimizer(cfg, model)
    by_decay = {group["weight_decay"]: {id(p) for p in group["params"]} for group in optimizer.param_groups}
    assert by_decay == {
        1e-4: {id(model.conv.weight), id(model.head.weight)},
        0.0: {id(model.conv.bias), id(model.norm.weight), id(model.norm.bias)},
    }, "conv/linear weights decay; biases and norms do not; frozen parameters left out"
    plugin = no_bias_decay_param_groups(model, 1e-4)
    assert [[id(p) for p in g["params"]] for g in optimizer.param_groups] == [
        [id(p) for p in g["params"]] for g in plugin
    ]
    for group in optimizer.param_groups:
        assert (group["momentum"], group["nesterov"], group["lr"]) == (0.8, True, BASE_LRS[0])


def test_default_groups_are_detectron2s():
    cfg = _cfg()
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    model = _TinyDetector()
    ours = Trainer.build_optimizer(cfg, model)
    theirs = build_optimizer(cfg, model)
    assert type(ours) is type(theirs)
    assert len(ours.param_groups) == len(theirs.param_groups)
    for a, b in zip(ours.param_groups, theirs.param_groups):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}


def test_gradient_clipping_with_no_bias_decay():
    cfg = _cfg(NO_BIAS_DECAY=True)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1e-3
    cfg.SOLVER.MOMENTUM = 0.0
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    model = _TinyDetector()
    optimizer = Trainer.build_optimizer(cfg, model)
    before = model.head.bias.detach().clone()
    for param in model.parameters():  # Detectron2's per-parameter clipper needs every grad set on torch 2.x
        param.grad = torch.zeros_like(param)
    model.head.bias.grad = torch.full_like(before, 100.0)
    optimizer.step()
    torch.testing.assert_close(model.head.bias.detach(), before - BASE_LRS[0] * 1e-3, rtol=0.0, atol=1e-9,
                               msg="clipped step")
