"""Train-step time of the fashion-scenes Faster R-CNN with and without detection mixup, in both frameworks.

Each step starts from the raw batch (4 images of 128 px, 3 boxes each, uint8, as the loaders give it):

- mmdet: the ``..._tricks_fashion-scenes.py`` model; ``plain`` = the data preprocessor, forward, backward and
  update with MMDetection's ``RPNHead`` / ``StandardRoIHead``; ``mixup`` = ``mm_ext.det_mixup.mix_det_batch``
  (what ``DetectionMixupHook`` does before each iteration) on the same batch, then the same step with
  ``MixWeightRPNHead`` / ``MixWeightStandardRoIHead`` (per-box weights in the RPN and RoI losses);
- detectron2: the ``..._tricks_fashion_scenes.yaml`` model built by ``d2_ext.Trainer``; ``plain`` = forward,
  backward and update with Detectron2's ``RPN``; ``mixup`` = ``d2_ext.det_mixup.mix_d2_batch`` (what
  ``d2_ext.build_train_loader`` does to each batch), then the step with ``MixWeightRPN`` (the label-smoothing ROI
  heads weight the ROI losses).

The optimizer runs its full update at lr 0, so the weights, and with them the work of every step, stay those of
the first step (a model trained on one fixed batch drifts, and its step time with it). The set-ups alternate every
round. Printed per set-up: the median wall time and the median CPU time of the
process (both threads; steadier than wall time on a machine shared with other work), then the ratio of the
medians in each (the mixup's cost is ``ratio - 1`` of the step).

    python benchmarks/bench_det_mixup.py [--rounds 30] [--threads 1]

One thread by default: on this project's 2-core VM shared with other work, two OpenMP threads waited on each
other and the same steps took 4 to 6.5 s instead of 0.23 s, with ratios that meant nothing.
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
ALPHA = 1.5


def _freeze_lr(optimizer) -> None:
    for group in optimizer.param_groups:
        group["lr"] = 0.0


def _images():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 255, (3, 128, 128), generator=g, dtype=torch.uint8) for _ in range(4)]


def _mm_step(mixup: bool):
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.structures import InstanceData

    from mm_ext.det_mixup import mix_det_batch
    from plugins.tricks.detection_mixup import ratio_generator

    os.environ.setdefault("FASHION_SCENES_ROOT", "/nonexistent/")  # the config reads it; no data is loaded
    cfg = Config.fromfile(str(ROOT / "mm_ext/configs/faster-rcnn_timm-r26nd_fpn_tricks_fashion-scenes.py"))
    if mixup:
        cfg.model.rpn_head.type = "MixWeightRPNHead"
        cfg.model.roi_head.type = "MixWeightStandardRoIHead"
    DefaultScope.get_instance(f"bench-mixup-{mixup}", scope_name="mmdet")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    _freeze_lr(wrapper.optimizer)
    images, samples = _images(), []
    for _ in range(4):
        sample = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=HorizontalBoxes(BOXES.clone()), labels=LABELS.clone())
        samples.append(sample)
    state = {"iter": 0}

    def step():
        batch = dict(inputs=list(images), data_samples=list(samples))  # the loader's fresh batch
        if mixup:
            mix_det_batch(batch, ALPHA, ratio_generator(0, state["iter"]))
        state["iter"] += 1
        data = model.data_preprocessor(batch, training=True)
        loss, _ = model.parse_losses(model(**data, mode="loss"))
        wrapper.update_params(loss)

    return step


def _d2_step(mixup: bool):
    from detectron2.config import get_cfg
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    import d2_ext
    from d2_ext.det_mixup import mix_d2_batch
    from plugins.tricks.detection_mixup import ratio_generator

    cfg = get_cfg()
    d2_ext.add_tricks_config(cfg)
    cfg.merge_from_file(d2_ext.get_config_file("faster_rcnn_timm_R_26n_D_FPN_tricks_fashion_scenes.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.TRICKS.TIMM.CHECKPOINT = ""
    cfg.SOLVER.IMS_PER_BATCH = 4
    if mixup:
        cfg.MODEL.PROPOSAL_GENERATOR.NAME = "MixWeightRPN"
    torch.manual_seed(0)
    model = d2_ext.Trainer.build_model(cfg).train()
    optimizer = d2_ext.Trainer.build_optimizer(cfg, model)
    _freeze_lr(optimizer)
    batch = []
    for image in _images():
        instances = Instances((128, 128))
        instances.gt_boxes, instances.gt_classes = Boxes(BOXES.clone()), LABELS.clone()
        batch.append({"image": image, "instances": instances, "height": 128, "width": 128})
    storage = EventStorage(0)

    def step():
        with storage:
            data = mix_d2_batch(batch, ALPHA, ratio_generator(0, storage.iter)) if mixup else batch
            loss = sum(model(data).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            storage.iter += 1

    return step


def _times(setups: dict, rounds: int, warmup: int = 2) -> dict[str, tuple[float, float]]:
    """(median wall seconds, median process CPU seconds) per step of each set-up, alternating every round."""
    wall, cpu = {n: [] for n in setups}, {n: [] for n in setups}
    for r in range(warmup + rounds):
        for name, step in setups.items():
            w0, c0 = time.perf_counter(), time.process_time()
            step()
            if r >= warmup:
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in setups}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import logging

    logging.getLogger("mmengine").setLevel(logging.ERROR)
    print(f"torch {torch.__version__}, {a.threads} thread(s), {a.rounds} rounds, batch 4 x 128 px, CPU, "
          f"mixup alpha {ALPHA}")
    for framework, build in (("mmdet", _mm_step), ("detectron2", _d2_step)):
        setups = {f"{framework} plain": build(False), f"{framework} mixup": build(True)}
        times = _times(setups, a.rounds)
        for n, (wall, cpu) in times.items():
            print(f"  {n:18s} median wall {wall * 1e3:7.1f} ms/step, CPU {cpu * 1e3:7.1f} ms/step")
        for i, what in enumerate(("wall", "CPU")):
            ratio = times[f"{framework} mixup"][i] / times[f"{framework} plain"][i]
            print(f"  {framework}: mixup / plain ({what}) = {ratio:.3f} ({(ratio - 1) * 100:+.1f} % of the step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
