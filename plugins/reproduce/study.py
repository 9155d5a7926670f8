"""The stages of the paper's study at small scale: classification tables, then transfer to detection/segmentation.

Classification (timm_ext on Fashion-MNIST items on photos), every run logging per epoch its validation top-1
and calibration error and the clean top-1 of a fixed training subset (the train-val gap):
  model tweaks   ResNet-A, B, C, D, each with the efficient recipe;
  stacked table  B-standard -> D-efficient -> + cosine -> + label smoothing -> + distillation -> + mixup
                 -> + distillation + mixup (teacher: a deeper tricks_* model trained with cosine and smoothing
                 for the longest budget);
  budget ladder  D-efficient, + cosine, + label smoothing, + mixup and + distillation, each trained with its
                 schedule fitted to every budget of ``Preset.ladder`` (a budget's point is a run of that length,
                 not an epoch of a longer run), and the standard baseline at ``Preset.standard_budgets``: where
                 each trick starts to pay, and efficient training against seconds and updates.
Detection ablation (the Bag of Freebies' Faster R-CNN rows on the D-efficient backbone, :func:`det_ablation_stages`):
  baseline -> + cosine -> + label smoothing -> + detection mixup (per-box weights) and, beside it, mixup with
  the anchors' fixed 0.5 blend.
Transfer (:func:`transfer_rows`: a randomly initialised ResNet-D as the control, B-standard, and the stack's
  rows of the longest budget): Faster R-CNN in Detectron2 (and MMDetection on ``Preset.mmdet_transfer_rows``)
  (box mAP) and FCN in MMSegmentation (pixel accuracy, mIoU) on the fashion scenes, with the detector/segmenter
  recipe held fixed so that only the backbone changes (recipe files, :func:`transfer_recipes`, which each adapter
  lays over its config); one run per detector seed, all from the first classification seed's backbones.

The classification data are the fashion photos (``plugins.data.fashion_photos``: Fashion-MNIST items rendered
on photo crops exactly as the scenes render them), so that pre-training and transfer share a domain, as
ImageNet and VOC do. Every stage runs with a fixed number of threads (``Stage.threads``).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import yaml

from .outputs import CLS_RUN, parse_classification, parse_d2, parse_mm
from .pipeline import Stage
from .presets import Preset

TWEAK_ROWS = ["A", "B", "C", "D"]
STACKED_ROWS = ["B-standard", "D-efficient", "+ cosine", "+ label smoothing", "+ distillation", "+ mixup",
                "+ distillation + mixup"]
# The budget ladder: the stack's rows, each trained with its schedule fitted to every budget of Preset.ladder
LADDER_ROWS = ["D-efficient", "+ cosine", "+ label smoothing", "+ mixup", "+ distillation"]
# The paper's efficient-training comparison, the same ResNet-B: float32, batch b, no tricks against low
# precision, batch 4b, linear scaling, warmup, zero gamma and no bias decay (the model-tweak table's B row)
EFFICIENT_PAIR = {"baseline": "B-standard", "efficient": "tweak-B"}
RANDOM_ROW = "random init (D)"  # the control: the same detector from a randomly initialised ResNet-D

# The project packages each kind of stage runs (mm_ext and d2_ext build their backbones with timm_ext).
TIMM_SOURCES = ("plugins", "timm_ext")
MM_SOURCES = ("plugins", "timm_ext", "mm_ext")
D2_SOURCES = ("plugins", "timm_ext", "d2_ext")
MMDET_CONFIG = "mm_ext/configs/faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py"
MMSEG_CONFIG = "mm_ext/configs/fcn_timm-r26nd-d8_baseline_fashion-scenes.py"
D2_CONFIG = "d2_ext/configs/faster_rcnn_timm_R_26n_D_FPN_baseline_fashion_scenes.yaml"


def slug(row: str) -> str:
    if row == RANDOM_ROW:
        return "random-init"
    return (row.replace("+ ", "").replace(" + ", "-").replace(" ", "-")) or row


# Pixel statistics (0..255) the backbones were trained with, which the detectors' input normalisation repeats.
PIXEL_STATS = {"fashion_photos": ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),
               "fashion_mnist": ([72.94] * 3, [90.02] * 3)}


def low_precision() -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (AVX512-BF16 or AMX): the paper's low-precision
    trick as it exists on a CPU. Without it, bfloat16 is emulated and slower, so the efficient rows stay float32."""
    import torch

    return bool(torch.cuda.is_available() or torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _milestones(epochs: int) -> list[int]:
    return sorted({min(epochs, max(1, round(epochs * f))) for f in (0.5, 0.75)})


def recipes(p: Preset, epochs: int | None = None) -> dict[str, dict]:
    """The recipe of every classification row (plugins.recipe.Recipe fields), its schedule fitted to ``epochs``
    (default: the base tables' ``p.epochs``)."""
    epochs = epochs or p.epochs
    standard = dict(variant="b", base_lr=0.1, base_batch_size=256, batch_size=p.batch_size // 4, epochs=epochs,
                    warmup_epochs=0, schedule="step", step_milestones=_milestones(epochs), step_gamma=0.1,
                    momentum=0.9, nesterov=True, weight_decay=1e-4, no_bias_decay=False, zero_gamma=False,
                    label_smoothing=0.0, label_smoothing_form="paper", mixup_alpha=0.0, amp=False)
    # The paper's "efficient" row: 4x the batch with linear scaling, warmup, zero gamma, no bias decay and low
    # precision: FP16 on a GPU; here bfloat16 autocast + channels_last where the CPU has bfloat16 units, else
    # float32 (the report says which).
    efficient = {**standard, "variant": "d", "batch_size": p.batch_size, "warmup_epochs": 1, "zero_gamma": True,
                 "no_bias_decay": True, "amp": low_precision()}
    cosine = {**efficient, "schedule": "cosine"}
    smooth = {**cosine, "label_smoothing": 0.1}
    mixup = {**smooth, "mixup_alpha": 0.2}
    out = {f"tweak-{v}": {**efficient, "variant": v.lower()} for v in TWEAK_ROWS}
    out.update({"B-standard": standard, "D-efficient": efficient, "+ cosine": cosine, "+ label smoothing": smooth,
                "+ distillation": smooth, "+ mixup": mixup, "+ distillation + mixup": mixup,
                "teacher": {**smooth, "epochs": p.teacher_epochs}})
    return out


def _write_recipe(run_dir: Path, name: str, recipe: dict) -> str:
    """Writes the row's recipe under ``<run>/recipes/`` and returns it as a stage argument (``{run}/...``)."""
    text = yaml.safe_dump({"name": name, **recipe}, sort_keys=True)
    rel = f"recipes/{slug(name)}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.yaml"
    path = run_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(text)
    return "{run}/" + rel


def transfer_iters_per_epoch(p: Preset) -> int:
    """One epoch of the detectors and the segmenter: the scenes' training images / ``transfer_batch``."""
    return max(1, p.scenes_train // p.transfer_batch)


def transfer_recipes(p: Preset) -> dict[str, dict]:
    """The detector and segmenter recipes (``plugins.recipe.Recipe`` fields), held fixed over every backbone and
    given to the three adapters as files, which convert their epochs (of :func:`transfer_iters_per_epoch`
    iterations) with the one rule. The run length is each framework's own key (``det_iters`` / ``seg_iters``).

    detector:  the shipped configs' schedule: linear warmup over the first 10 % (``Preset.det_warmup_iters``;
               the paper's ``i / m``, where the frameworks' own warmup starts from 0.001 of the lr), lr x0.1 at
               75 % and 90 %, SGD momentum 0.9, weight decay 1e-4 on every parameter;
    segmenter: MMSegmentation's SGD (momentum 0.9, weight decay 5e-4) with the recipe schedule nearest to the
               shipped config's poly decay to 0.01 of the lr: cosine to ``min_lr_ratio=0.01``, no warmup.
    """
    per_epoch = transfer_iters_per_epoch(p)

    def epochs(iters: int) -> float:  # exact enough that epochs_to_steps gives back ``iters``
        return round(iters / per_epoch, 6)

    common = dict(base_lr=p.transfer_lr, base_batch_size=p.transfer_batch, batch_size=p.transfer_batch,
                  momentum=0.9, nesterov=False, no_bias_decay=False, zero_gamma=False, label_smoothing=0.0,
                  amp=False)
    det = {**common, "epochs": math.ceil(p.det_iters / per_epoch), "weight_decay": 1e-4,
           "warmup_epochs": epochs(max(1, p.det_iters // 10) if p.det_warmup_iters is None else p.det_warmup_iters),
           "schedule": "step",
           "step_milestones": [epochs(round(p.det_iters * 0.75)), epochs(round(p.det_iters * 0.9))],
           "step_gamma": 0.1}
    seg = {**common, "epochs": math.ceil(p.seg_iters / per_epoch), "weight_decay": 5e-4, "warmup_epochs": 0,
           "schedule": "cosine", "min_lr_ratio": 0.01}
    return {"detector": det, "segmenter": seg}


def _mm_options(p: Preset, iters: int) -> list[str]:
    """The run's length, batch and input statistics: the config's own keys (the recipe has the rest)."""
    mean, std = PIXEL_STATS[p.dataset]
    return [f"train_cfg.max_iters={iters}", f"train_cfg.val_interval={iters}",
            f"train_dataloader.batch_size={p.transfer_batch}", f"default_hooks.checkpoint.interval={iters}",
            f"model.data_preprocessor.mean={mean}", f"model.data_preprocessor.std={std}"]


def _d2_options(p: Preset) -> list[str]:
    """Detectron2's run matched to the MMDetection one: its length, batch and input statistics (the recipe has
    the rest)."""
    iters = p.det_iters
    mean, std = PIXEL_STATS[p.dataset]
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.IMS_PER_BATCH", str(p.transfer_batch),
            "TRICKS.ITERS_PER_EPOCH", str(transfer_iters_per_epoch(p)),
            "SOLVER.CHECKPOINT_PERIOD", str(iters), "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0",
            "MODEL.PIXEL_MEAN", str(mean), "MODEL.PIXEL_STD", str(std)]


def cls_stage_name(row: str, seed: int, epochs: int | None = None) -> str:
    """The stage of a classification row; ``epochs`` names a ladder budget other than the base tables' one."""
    if epochs is not None:
        return f"cls-{slug(row)}-e{epochs}-s{seed}"
    if row == "D-efficient":
        return f"cls-tweak-D-s{seed}"
    if row == "teacher":
        return f"cls-teacher-s{seed}"
    return f"cls-{slug(row)}-s{seed}"


def budget_stage_name(p: Preset, row: str, seed: int, epochs: int) -> str:
    """The stage of ``row`` at a budget: the base tables' own run at ``p.epochs``."""
    return cls_stage_name(row, seed, None if epochs == p.epochs else epochs)


def transfer_rows(p: Preset) -> dict[str, tuple[str | None, str]]:
    """The backbones that transfer, ``label -> (classification stage or None, model)``: the random-init control,
    the standard baseline of the base budget and the stack's rows of the longest budget (first seed)."""
    s0, longest = p.seeds[0], p.longest
    rows = {RANDOM_ROW: (None, p.model + "d"),
            f"B-standard @{p.epochs}": (budget_stage_name(p, "B-standard", s0, p.epochs), p.model + "b")}
    for row in LADDER_ROWS:
        rows[f"{row} @{longest}"] = (budget_stage_name(p, row, s0, longest), p.model + "d")
    return rows


def transfer_slug(label: str) -> str:
    if label == RANDOM_ROW:
        return "random-init"
    row, _, epochs = label.rpartition(" @")
    return f"{slug(row)}-e{epochs}"


def _mmdet_runs(p: Preset, label: str) -> bool:
    return label == RANDOM_ROW or label.rpartition(" @")[0] in p.mmdet_transfer_rows


def build_stages(p: Preset, run_dir: Path) -> list[Stage]:
    budgets = {e for e, _ in p.ladder}
    if p.ladder and (p.epochs not in budgets or not set(dict(p.ladder)[p.epochs]) <= set(p.seeds)):
        raise ValueError(f"preset {p.name}: the ladder's budget {p.epochs} (the base tables') must use seeds among "
                         f"{p.seeds}")
    transfer = {k: _write_recipe(run_dir, k, v) for k, v in transfer_recipes(p).items()}
    stages: list[Stage] = []
    # timm's loop with the paper's data pipeline: the photos in memory, flips only (a full-image crop, no colour
    # jitter), one kept epoch checkpoint; timm's files in {out}/train/, the backbone in {out}/backbone.pth; after
    # every epoch the clean top-1 of a fixed training subset and the calibration error (summary.csv).
    common = ["--dataset", p.dataset, "--img-size", str(p.img_size), "--in-chans", "3",
              "--train-subset", str(p.train_subset), "--val-subset", str(p.val_subset),
              "--scale", "1", "1", "--ratio", "1", "1", "--color-jitter", "0", "--checkpoint-hist", "1",
              "--train-clean-subset", str(p.clean_subset), "--ece-bins", str(p.ece_bins),
              "--no-progress", "--output", "{out}", "--experiment", CLS_RUN, "--export-backbone", "{out}/backbone.pth"]

    # Stage costs are seconds on an idle 2-core CPU, fitted to measured stage times (transfer: about 0.065 s per
    # training image in each framework, MMDetection with torchvision's ops). They only drive the remaining-time
    # estimate, which rescales them by the measured rate.
    def cls_cost(epochs: int) -> float:
        images = ((p.train_subset or 60000) + (p.val_subset or 10000) + p.clean_subset) * epochs
        return 8 + images * (p.img_size / 28) ** 2 / 900

    teacher = cls_stage_name("teacher", p.seeds[0])  # one teacher, trained for the longest budget
    kd = ["--kd-teacher", "{dep:" + teacher + "}/" + CLS_RUN + "/model_best.pth.tar", "--kd-temperature", "20"]

    def cls_stage(row: str, seed: int, epochs: int | None = None, name: str | None = None) -> Stage:
        rec = recipes(p, epochs)[row]
        recipe = _write_recipe(run_dir, row, rec)
        fast = ["--channels-last"] if rec["amp"] else []  # with bfloat16 autocast, as the paper's FP16 + NHWC
        distil = "distillation" in row
        variant = "b" if row == "B-standard" else "d"
        if row.startswith("tweak-"):
            variant = row[-1].lower()
        model = p.teacher_model + "d" if row == "teacher" else p.model + variant
        cost = cls_cost(rec["epochs"]) * (1.7 if row == "teacher" else 1.4 if distil else 1.0)
        return Stage(name=name or cls_stage_name(row, seed, epochs),
                     argv=["-m", "timm_ext.train", "--model", model, "--recipe", recipe, "--seed", str(seed), *common,
                           *fast, *(kd if distil else [])],
                     cost=cost / (2.0 if fast else 1.0),  # bench_low_precision.py: 2.46x per step, less overall
                     deps=[teacher] if distil else [], resume_argv=["--resume", "{out}/" + CLS_RUN + "/last.pth.tar"],
                     resume_marker=CLS_RUN + "/last.pth.tar", parse=parse_classification, sources=TIMM_SOURCES,
                     threads=p.threads)

    stages.append(cls_stage("teacher", p.seeds[0]))
    for seed in p.seeds:
        for v in TWEAK_ROWS:
            stages.append(cls_stage(f"tweak-{v}", seed, name=cls_stage_name(f"tweak-{v}", seed)))
        for row in STACKED_ROWS:
            if row != "D-efficient":  # the same run as the tweak table's D row
                stages.append(cls_stage(row, seed))
    # the paper's efficient-training pair (ResNet-B) at each budget first: its seconds are a result, and the
    # stages that run last are the likeliest to share the machine with other work
    for epochs, seeds in p.standard_budgets:
        if epochs != p.epochs:
            stages.extend(cls_stage(row, seed, epochs) for seed in seeds for row in EFFICIENT_PAIR.values())
    for epochs, seeds in p.ladder:
        if epochs != p.epochs:
            stages.extend(cls_stage(row, seed, epochs) for seed in seeds for row in LADDER_ROWS)

    scenes = "data-fashion-scenes"
    stages.append(Stage(name=scenes, argv=["-m", "plugins.data.scenes", "--out", "{out}", "--train",
                                           str(p.scenes_train), "--val", str(p.scenes_val), "--image-size",
                                           str(p.scene_size), "--seed", "0"],
                        cost=3 + (p.scenes_train + p.scenes_val) / 100, sources=("plugins",), pack=False, threads=1))
    for seed in p.transfer_seeds:
        s = f"s{seed}"
        for label, (src, model) in transfer_rows(p).items():
            deps = [scenes] if src is None else [src, scenes]
            mm_ckpt = "None" if src is None else "{dep:" + src + "}/backbone.pth"
            d2_ckpt = "" if src is None else mm_ckpt
            name = transfer_slug(label)
            if _mmdet_runs(p, label):
                stages.append(_mm_stage(p, f"det-mmdet-{name}-{s}", MMDET_CONFIG, transfer["detector"], model,
                                        mm_ckpt, p.det_iters, seed, deps, 25 + p.det_iters * p.transfer_batch * 0.07))
            stages.append(_d2_stage(p, f"det-d2-{name}-{s}", transfer["detector"], model, d2_ckpt, seed, deps))
            stages.append(_mm_stage(p, f"seg-mmseg-{name}-{s}", MMSEG_CONFIG, transfer["segmenter"], model, mm_ckpt,
                                    p.seg_iters, seed, deps, 20 + p.seg_iters * p.transfer_batch * 0.062))
    stages.extend(det_ablation_stages(p, run_dir))
    return stages


# The Bag of Freebies' Faster R-CNN ablation (Zhang et al. 2019), on the D-efficient backbone of the first seed:
# each row adds one detector trick to the row above; the last one is a sibling of "+ mixup", the anchors' fixed
# 0.5 blend (GluonCV, MMDetection's MixUp) in place of r ~ Beta(1.5, 1.5).
DET_ABLATION_ROWS = {"baseline (step)": "baseline", "+ cosine": "cosine", "+ label smoothing": "label-smoothing",
                     "+ mixup": "mixup", "+ mixup, fixed 0.5 blend": "mixup-fixed"}


def det_ablation_recipes(p: Preset) -> dict[str, dict]:
    """The detector recipe of every ablation row: the transfer detector's (warmup, step decay), then cosine over
    the same warmup, classifier label smoothing 0.1 (the paper's form), detection mixup with alpha 1.5 (per-box
    weights), and the same mixup with every pair blended at 0.5."""
    base = transfer_recipes(p)["detector"]
    cosine = {**base, "schedule": "cosine"}
    smooth = {**cosine, "label_smoothing": 0.1}
    mixup = {**smooth, "det_mixup_alpha": 1.5}
    return {"baseline (step)": base, "+ cosine": cosine, "+ label smoothing": smooth, "+ mixup": mixup,
            "+ mixup, fixed 0.5 blend": {**mixup, "det_mixup_fixed_ratio": 0.5}}


def det_ablation_stage_name(framework: str, row: str, seed: int) -> str:
    return f"detab-{framework}-{DET_ABLATION_ROWS[row]}-s{seed}"


def det_ablation_stages(p: Preset, run_dir: Path) -> list[Stage]:
    """One detector run per row, framework (``p.det_ablation_frameworks``) and detector seed (``p.transfer_seeds``),
    each from the D-efficient backbone of ``p.seeds[0]``. Detectron2 runs with the heads that apply the keys
    (``MixWeightRPN``, ``LabelSmoothingStandardROIHeads``: Detectron2's own losses where a key is off); the
    MMDetection recipe swaps its heads and loss by type where a row needs them."""
    recipe_files = {row: _write_recipe(run_dir, f"det-ablation-{slug_}", recipe)
                    for (row, recipe), slug_ in zip(det_ablation_recipes(p).items(), DET_ABLATION_ROWS.values(),
                                                    strict=True)}
    scenes, backbone = "data-fashion-scenes", cls_stage_name("D-efficient", p.seeds[0])
    checkpoint, model, deps = "{dep:" + backbone + "}/backbone.pth", p.model + "d", [backbone, scenes]
    heads = ["MODEL.PROPOSAL_GENERATOR.NAME", "MixWeightRPN", "MODEL.ROI_HEADS.NAME", "LabelSmoothingStandardROIHeads"]
    stages = []
    for seed in p.transfer_seeds:
        for row in DET_ABLATION_ROWS:
            if "mmdet" in p.det_ablation_frameworks:
                stages.append(_mm_stage(p, det_ablation_stage_name("mmdet", row, seed), MMDET_CONFIG,
                                        recipe_files[row], model, checkpoint, p.det_iters, seed, deps,
                                        25 + p.det_iters * p.transfer_batch * 0.07))
            if "d2" in p.det_ablation_frameworks:
                stages.append(_d2_stage(p, det_ablation_stage_name("d2", row, seed), recipe_files[row], model,
                                        checkpoint, seed, deps, extra=heads))
    return stages


_SCENES_DATA = "{dep:data-fashion-scenes}"


def _mm_stage(p: Preset, name: str, config: str, recipe: str, model: str, checkpoint: str, iters: int, seed: int,
              deps: list[str], cost: float) -> Stage:
    """An MMDetection / MMSegmentation run of ``config`` on the fashion scenes: the recipe file, the backbone
    (``checkpoint`` "None": random init) and the run's length, batch and input statistics as config options."""
    return Stage(name=name, argv=["-m", "mm_ext.train", config, "--work-dir", "{out}", "--recipe", recipe,
                                  "--recipe-iters-per-epoch", str(transfer_iters_per_epoch(p)), "--cfg-options",
                                  f"model.backbone.model_name={model}", f"model.backbone.checkpoint={checkpoint}",
                                  *_mm_options(p, iters), f"randomness.seed={seed}"],
                 deps=deps, parse=parse_mm, cost=cost, env={"FASHION_SCENES_ROOT": _SCENES_DATA + "/"},
                 sources=MM_SOURCES, threads=1)


def _d2_stage(p: Preset, name: str, recipe: str, model: str, checkpoint: str, seed: int, deps: list[str],
              extra: list[str] = ()) -> Stage:
    """A Detectron2 Faster R-CNN run on the fashion scenes (``checkpoint`` "": random init); ``extra``: more
    config keys before the run's length, batch and statistics."""
    return Stage(name=name, argv=["-m", "d2_ext.train_net", "--config-file", D2_CONFIG, "--scenes-root",
                                  _SCENES_DATA, "--recipe", recipe, "OUTPUT_DIR", "{out}", "TRICKS.TIMM.MODEL_NAME",
                                  model, "TRICKS.TIMM.CHECKPOINT", checkpoint, *extra, *_d2_options(p), "SEED",
                                  str(seed)],
                 deps=deps, parse=parse_d2, cost=12 + p.det_iters * p.transfer_batch * 0.065, sources=D2_SOURCES,
                 threads=1)
