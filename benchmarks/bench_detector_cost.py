"""Where MMDetection's Faster R-CNN step loses to Detectron2's on the CPU, and what the shipped configs change.

Side by side, alternating every round, on one fixed synthetic batch (4 images of 128 px, 3 boxes each):

- ``mmdet, mmcv ops``: the fashion-scenes Faster R-CNN (``..._baseline_fashion-scenes.py``) with mmcv's own RoIAlign
  and NMS, as MMDetection's model zoo configures them;
- ``mmdet, torchvision ops``: the same model with ``roi_layer.use_torchvision=True`` and
  ``nms=dict(type='torchvision_nms')`` (``mm_ext.ops``), as the shipped fashion-scenes configs have them;
- ``detectron2``: the Detectron2 fashion-scenes Faster R-CNN of the same size (``d2_ext`` baseline yaml), which
  uses torchvision's roi_align and nms.

Then NMS alone on RPN-sized inputs (mmcv's ``batched_nms`` with ``type='nms'`` against ``'torchvision_nms'``).
``--bf16`` instead times the torchvision-ops mmdet step and the Detectron2 step in float32 against the same steps
under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (forward and backward), side by side.

    python benchmarks/bench_detector_cost.py [--rounds 15] [--threads 2] [--bf16]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from bench_adapter_steps import _d2_setups, _mm_setups, interleaved_times


def _mmcv_ops(cfg) -> None:
    """Undo the CPU fast path: mmcv's RoIAlign and NMS everywhere the model names them."""
    cfg.model.roi_head.bbox_roi_extractor.roi_layer.use_torchvision = False
    for part in (cfg.model.train_cfg.rpn_proposal, cfg.model.test_cfg.rpn, cfg.model.test_cfg.rcnn):
        part.nms.type = "nms"


def _nms(rounds: int) -> None:
    from mmcv.ops import batched_nms

    import mm_ext  # noqa: F401  (registers torchvision_nms)

    for n in (1000, 2000, 4000):
        g = torch.Generator().manual_seed(n)
        xy = torch.rand(n, 2, generator=g) * 128
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 60 + 2], 1)
        scores, idxs = torch.rand(n, generator=g), torch.randint(0, 5, (n,), generator=g)
        times = {}
        for kind in ("nms", "torchvision_nms"):
            cfg = dict(type=kind, iou_threshold=0.7)
            batched_nms(boxes, scores, idxs, copy.deepcopy(cfg))
            samples = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                batched_nms(boxes, scores, idxs, copy.deepcopy(cfg))
                samples.append(time.perf_counter() - t0)
            times[kind] = statistics.median(samples)
        print(f"  batched_nms, {n} boxes: mmcv {times['nms'] * 1e3:7.2f} ms  torchvision "
              f"{times['torchvision_nms'] * 1e3:6.2f} ms  ratio {times['nms'] / times['torchvision_nms']:.1f}x")


def _bf16(rounds: int) -> int:
    def autocast(step):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                step()

        return run

    mm = _mm_setups(("baseline",))["mmdet baseline"]
    d2 = _d2_setups(("baseline",))["detectron2 baseline"]
    setups = {"mmdet float32": mm, "mmdet bfloat16": autocast(mm), "detectron2 float32": d2,
              "detectron2 bfloat16": autocast(d2)}
    times = {n: statistics.median(t) for n, t in interleaved_times(setups, rounds).items()}
    for n, t in times.items():
        print(f"  {n:22s} median {t * 1e3:7.1f} ms/step")
    for fw in ("mmdet", "detectron2"):
        print(f"  {fw}: bfloat16 / float32 = {times[fw + ' bfloat16'] / times[fw + ' float32']:.2f}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="float32 against bfloat16 autocast instead")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import logging

    logging.getLogger("mmengine").setLevel(logging.ERROR)
    print(f"torch {torch.__version__}, {a.threads} thread(s), {a.rounds} rounds, batch 4 x 128 px, CPU")
    if a.bf16:
        return _bf16(a.rounds)
    setups = {"mmdet, mmcv ops": _mm_setups(("baseline",), _mmcv_ops)["mmdet baseline"],
              "mmdet, torchvision ops": _mm_setups(("baseline",))["mmdet baseline"],
              "detectron2": _d2_setups(("baseline",))["detectron2 baseline"]}
    times = interleaved_times(setups, a.rounds)
    d2 = statistics.median(times["detectron2"])
    for n, t in times.items():
        print(f"  {n:24s} median {statistics.median(t) * 1e3:7.1f} ms/step  vs detectron2 "
              f"{statistics.median(t) / d2:.2f}x")
    _nms(a.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
