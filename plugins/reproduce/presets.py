"""Sizes of the study: ``quick`` (every table, minutes) and ``full`` (3 seeds, longer schedules, hours)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preset:
    """How big each part of the study is.

    Args:
        seeds: classification and transfer runs are repeated once per seed.
        epochs: classification epochs for every refinement (mixup included; the paper trains mixup longer).
        teacher_epochs: epochs of the distillation teacher.
        train_subset / val_subset: Fashion-MNIST images used (0 = all 60,000 / 10,000).
        img_size: classification input size (Fashion-MNIST is 28 x 28; resized when larger).
        batch_size: the efficient recipe's batch; the standard baseline uses half of it (paper: 256 vs 1024).
        scenes_train / scenes_val / scene_size: fashion scenes generated for detection and segmentation.
        det_iters / seg_iters: training iterations of Faster R-CNN and FCN per backbone.
        det_warmup_iters: the detectors' linear warmup (None: 10 % of ``det_iters``). The paper's warmup starts at
            ``lr / m``, where the frameworks' own starts at 0.001 of the lr: over a 10-iteration warmup that first
            step is large enough to make a quick-preset detector's loss non-finite, hence 25 there.
        transfer_seeds: seeds of the detector and segmenter runs (each transfers the backbones of ``seeds[0]``),
            so that every transfer row has a spread over runs that differ only in the detector's own randomness.
        transfer_batch: images per iteration of the detectors and the segmenter.
        transfer_lr: their lr at ``transfer_batch`` (the same in MMDetection, Detectron2 and MMSegmentation).
        dataset: classification data, ``fashion_photos`` (Fashion-MNIST items on photo crops, the fashion
            scenes' domain, RGB) or ``fashion_mnist`` (grey items on black).
        det_ablation_frameworks: the detectors of the Bag of Freebies ablation (``study.det_ablation_stages``):
            ``"mmdet"`` and/or ``"d2"``; empty: no ablation. Its seeds are ``transfer_seeds``.
        ladder: the budget ladder, ``(epochs, seeds)`` pairs: the stack's rows (``study.LADDER_ROWS``) trained
            with their schedule fitted to each budget; the pair at ``epochs`` is the base tables' own runs.
        standard_budgets: ``(epochs, seeds)`` of the paper's efficient-training pair at each budget (ResNet-B:
            the standard baseline, float32 at batch/4, and the efficient setting of the model-tweak table), for
            top-1 against seconds and updates.
        clean_subset: training images evaluated after every epoch (``--train-clean-subset``: the train-val gap);
            every evaluation also logs the calibration error over ``ece_bins`` bins.
        mmdet_transfer_rows: the transfer rows MMDetection runs (all of them in Detectron2 and MMSegmentation);
            the stack's rows are those of the longest budget.
        threads: the threads of a classification stage (the detectors and the segmenter take one each and run
            two at a time); fixed, so that a machine with more cores computes the same sums in the same order.
    """

    name: str
    seeds: tuple[int, ...]
    epochs: int
    teacher_epochs: int
    train_subset: int
    val_subset: int
    img_size: int
    batch_size: int
    scenes_train: int
    scenes_val: int
    scene_size: int
    det_iters: int
    seg_iters: int
    det_warmup_iters: int | None = None
    transfer_batch: int = 8
    transfer_seeds: tuple[int, ...] = (0,)
    transfer_lr: float = 0.01
    dataset: str = "fashion_photos"
    model: str = "tricks_resnet26n"
    teacher_model: str = "tricks_resnet50n"
    det_ablation_frameworks: tuple[str, ...] = ("mmdet", "d2")
    ladder: tuple[tuple[int, tuple[int, ...]], ...] = ()
    standard_budgets: tuple[tuple[int, tuple[int, ...]], ...] = ()
    clean_subset: int = 2000
    ece_bins: int = 15
    mmdet_transfer_rows: tuple[str, ...] = ("random init (D)", "B-standard", "D-efficient", "+ label smoothing")
    threads: int = 2

    @property
    def longest(self) -> int:
        """The longest classification budget (epochs): the stack rows that transfer are trained this long."""
        return max([self.epochs, *(e for e, _ in self.ladder)])

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "quick": Preset(name="quick", seeds=(0,), epochs=2, teacher_epochs=4, train_subset=5000, val_subset=2000,
                    img_size=32, batch_size=64, scenes_train=200, scenes_val=50, scene_size=128,
                    det_iters=100, seg_iters=100, det_warmup_iters=25, transfer_batch=4, transfer_lr=0.01,
                    det_ablation_frameworks=("d2",),  # the detection ablation's rows once, in one framework
                    ladder=((2, (0,)), (4, (0,))), standard_budgets=((2, (0,)), (4, (0,))), clean_subset=1000),
    # The base tables: 3 seeds of 30 classification runs on the fashion photos at 8 epochs (an efficient bfloat16
    # run about 1 min, the float32 baseline about 2 min), one teacher of 32 epochs; the budget ladder: the stack's
    # five rows at 16 epochs (2 seeds) and 32 (3 seeds), and the baseline at 16 (2) and 32 (1); transfer: 3
    # detector seeds of 7 backbones (random-init control, B-standard, the 32-epoch stack) in Detectron2 and
    # MMSegmentation, 4 of them in MMDetection, 800 iterations each, two at a time on one core each; and the
    # detection ablation (5 rows x 3 seeds x 2 detectors). Measured for seed 0's ResNet-B earlier: 4 epochs left
    # the efficient setting (batch 128, 312 updates) at 34.0 % top-1 against the baseline's 61.0 %; 8 epochs gave
    # 55.05 % against 69.2 %. A Detectron2 pilot of a + cosine backbone gave box AP 11.6 at 600 iterations with
    # lr 0.005 and 22.3 at 1,200 with lr 0.01 (docs/results.md, "Transfer that measures something").
    "full": Preset(name="full", seeds=(0, 1, 2), epochs=8, teacher_epochs=32, train_subset=10000, val_subset=2000,
                   img_size=32, batch_size=128, scenes_train=1000, scenes_val=200, scene_size=128,
                   det_iters=800, seg_iters=800, transfer_batch=4, transfer_seeds=(0, 1, 2), transfer_lr=0.01,
                   ladder=((8, (0, 1, 2)), (16, (0, 1)), (32, (0, 1, 2))),
                   standard_budgets=((8, (0, 1, 2)), (16, (0, 1)), (32, (0,)))),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"--preset: unknown preset {name!r}; accepted: {sorted(PRESETS)}")
    return PRESETS[name]
