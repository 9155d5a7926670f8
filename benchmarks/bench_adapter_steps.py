"""Train-step time with the tricks against the same framework without them, same model, side by side.

- mm_ext: the fashion-scenes Faster R-CNN built from ``..._tricks_fashion-scenes.py`` (label-smoothing box loss,
  NoBiasDecayOptimWrapperConstructor, WarmupCosineLR) against ``..._baseline_...`` (CrossEntropyLoss, MMEngine's
  default constructor, LinearLR + MultiStepLR); MMEngine's own ``OptimWrapper.update_params`` and scheduler steps.
- d2_ext: the Detectron2 fashion-scenes Faster R-CNN (tricks yaml: LabelSmoothingStandardROIHeads, plugin
  optimizer groups and schedule) against the baseline yaml (StandardROIHeads, Detectron2's optimizer and
  WarmupMultiStepLR), both built by ``d2_ext.Trainer``'s builders.
The timm_ext step is in ``bench_timm_train.py``. One fixed synthetic batch (4 images of 128 px, 3 boxes each),
the two set-ups alternate every round; medians and the median of per-round ratios are printed.

    python benchmarks/bench_adapter_steps.py [--rounds 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BOXES = torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 100.0, 90.0], [70.0, 5.0, 120.0, 50.0]])
LABELS = torch.tensor([3, 7, 1])


def _mm_setups(kinds=("baseline", "tricks"), edit=None):
    """One train step per config kind; ``edit(cfg)`` may change the loaded config first."""
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, PARAM_SCHEDULERS, DefaultScope
    from mmengine.structures import InstanceData

    os.environ.setdefault("FASHION_SCENES_ROOT", "/nonexistent/")  # the configs read it; no data is loaded
    setups = {}
    for kind in kinds:
        cfg = Config.fromfile(str(ROOT / f"mm_ext/configs/faster-rcnn_timm-r26nd_fpn_{kind}_fashion-scenes.py"))
        if edit is not None:
            edit(cfg)
        DefaultScope.get_instance(f"bench-{kind}", scope_name="mmdet")
        torch.manual_seed(0)
        model = MODELS.build(cfg.model).train()
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        schedulers = [PARAM_SCHEDULERS.build({**s, "end": s.get("end", 1000)}, default_args={"optimizer": wrapper})
                      for s in cfg.param_scheduler]
        samples = []
        for _ in range(4):
            s = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128), pad_shape=(128, 128),
                                            scale_factor=(1.0, 1.0), batch_input_shape=(128, 128)))
            s.gt_instances = InstanceData(bboxes=BOXES.clone(), labels=LABELS.clone())
            samples.append(s)
        g = torch.Generator().manual_seed(0)
        data = model.data_preprocessor(dict(inputs=[torch.randint(0, 255, (3, 128, 128), generator=g,
                                                                  dtype=torch.uint8) for _ in range(4)],
                                            data_samples=samples), training=True)

        def step(model=model, wrapper=wrapper, schedulers=schedulers, data=data):
            losses = model(**data, mode="loss")
            loss, _ = model.parse_losses(losses)
            wrapper.update_params(loss)
            for s in schedulers:
                s.step()

        setups[f"mmdet {kind}"] = step
    return setups


def _d2_setups(kinds=("baseline", "tricks")):
    from detectron2.config import get_cfg
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    import d2_ext

    setups = {}
    for kind in kinds:
        cfg = get_cfg()
        d2_ext.add_tricks_config(cfg)
        cfg.merge_from_file(d2_ext.get_config_file(f"faster_rcnn_timm_R_26n_D_FPN_{kind}_fashion_scenes.yaml"))
        cfg.MODEL.DEVICE = "cpu"
        cfg.TRICKS.TIMM.CHECKPOINT = ""
        cfg.SOLVER.IMS_PER_BATCH = 4
        torch.manual_seed(0)
        model = d2_ext.Trainer.build_model(cfg).train()
        optimizer = d2_ext.Trainer.build_optimizer(cfg, model)
        scheduler = d2_ext.Trainer.build_lr_scheduler(cfg, optimizer)
        g = torch.Generator().manual_seed(0)
        batch = []
        for _ in range(4):
            inst = Instances((128, 128))
            inst.gt_boxes, inst.gt_classes = Boxes(BOXES.clone()), LABELS.clone()
            batch.append({"image": torch.randint(0, 255, (3, 128, 128), generator=g).float(), "instances": inst,
                          "height": 128, "width": 128})
        storage = EventStorage(0)

        def step(model=model, optimizer=optimizer, scheduler=scheduler, batch=batch, storage=storage):
            with storage:
                loss = sum(model(batch).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()

        setups[f"detectron2 {kind}"] = step
    return setups


def interleaved_times(setups: dict, rounds: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each setup, the setups alternating every round (load hits them alike)."""
    times = {n: [] for n in setups}
    for r in range(warmup + rounds):
        for n, step in setups.items():
            t0 = time.perf_counter()
            step()
            if r >= warmup:
                times[n].append(time.perf_counter() - t0)
    return times


def _compare(setups: dict, rounds: int, warmup: int = 3) -> None:
    names = list(setups)
    times = interleaved_times(setups, rounds, warmup)
    base, tricks = names
    ratios = [b / a for a, b in zip(times[base], times[tricks], strict=True)]
    for n in names:
        print(f"  {n:22s} median {statistics.median(times[n]) * 1e3:8.1f} ms/step")
    print(f"  ratio tricks/baseline: {statistics.median(times[tricks]) / statistics.median(times[base]):.3f} "
          f"(median of per-round ratios {statistics.median(ratios):.3f})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import logging

    logging.getLogger("mmengine").setLevel(logging.ERROR)
    print(f"torch {torch.__version__}, {a.threads} thread(s), {a.rounds} rounds, batch 4 x 128 px, CPU")
    _compare(_mm_setups(), a.rounds)
    _compare(_d2_setups(), a.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
