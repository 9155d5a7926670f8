"""ResNet-A/B/C/D (paper 4.1-4.2) on timm's ResNet, and zero gamma (paper 3.1) for any framework's ResNet.

The variants, as the paper defines them (PAPER.md):

- ``"a"``: the original ResNet: 7x7 stem; a down-sampling bottleneck has its stride 2 in the first 1x1 conv.
- ``"b"``: the stride moves to the 3x3 conv (timm's and torchvision's default ``resnet50``).
- ``"c"``: B with the 7x7 stem replaced by three 3x3 convs of widths 32, 32, 64, the first with stride 2
  (timm ``stem_type="deep"``; timm's ``resnet50c``).
- ``"d"``: C plus, in the shortcut of a down-sampling block, a 2x2 stride-2 average pool before a stride-1
  1x1 conv (timm ``avg_down=True``; timm's ``resnet50d``).

With basic blocks (depths 18 and 34) there is no 1x1 conv on the main path, so A and B coincide.

This is the one ``plugins`` module that needs timm, and it imports it only when a model is built; the
other functions here take any ``nn.Module``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["DEPTHS", "VARIANTS", "create_resnet", "zero_gamma_"]

VARIANTS = ("a", "b", "c", "d")
# depth -> (block kind, blocks per stage); 26 is timm's resnet26 (bottlenecks, 2-2-2-2).
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    26: ("bottleneck", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_STAGE_CHANNELS = (64, 128, 256, 512)
# Arguments create_resnet sets itself from the variant, depth and width.
_RESERVED_TIMM_KWARGS = ("block", "layers", "channels", "stem_type", "avg_down", "zero_init_last")


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def create_resnet(
    variant: str,
    depth: int = 50,
    num_classes: int = 1000,
    in_chans: int = 3,
    base_width: int = 64,
    stem_width: int = 32,
    zero_gamma: bool = False,
    small_input: bool = False,
    width_multiplier: float = 1.0,
    **timm_kwargs: Any,
) -> nn.Module:
    """Build ResNet-``variant`` as a ``timm.models.resnet.ResNet`` (weights randomly initialised).

    Args:
        variant: ``"a"``, ``"b"``, ``"c"`` or ``"d"`` (upper case accepted), see the module docstring.
        depth: 18, 26, 34, 50 (default), 101 or 152.
        num_classes: classifier outputs (default 1000; 0 for no classifier).
        in_chans: input channels (default 3).
        base_width: bottleneck width per 64 planes, timm's ``base_width`` (default 64).
        stem_width: the stem outputs ``2 * stem_width`` channels; a deep stem (C, D) is ``stem_width,
            stem_width, 2 * stem_width`` wide (default 32: the paper's 32, 32, 64 and the usual 64-wide 7x7).
        zero_gamma: zero the last BN gamma of every residual block (default False). timm zero-inits them by
            default; here False really leaves every gamma at 1.
        small_input: drop the stem max-pool (a stride 2) for 28-64 px images (default False).
        width_multiplier: scales the stage widths ``(64, 128, 256, 512)`` and ``stem_width`` (default 1.0;
            0.25 gives stages 16, 32, 64, 128 wide and a 16-wide stem).
        **timm_kwargs: passed to ``timm.models.resnet.ResNet`` (e.g. ``drop_path_rate``, ``norm_layer``,
            ``output_stride``), except those set here: ``block, layers, channels, stem_type, avg_down,
            zero_init_last``.
    """
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    variant = variant.lower() if isinstance(variant, str) else variant
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {tuple(DEPTHS)}, got {depth!r}")
    for name in ("in_chans", "base_width", "stem_width"):
        _check_positive_int(name, locals()[name])
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
    ok = isinstance(width_multiplier, int | float) and not isinstance(width_multiplier, bool)
    if not ok or not math.isfinite(width_multiplier) or width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be a finite number > 0, got {width_multiplier!r}")
    reserved = sorted(set(timm_kwargs) & set(_RESERVED_TIMM_KWARGS))
    if reserved:
        raise ValueError(f"timm_kwargs must not set {reserved}: create_resnet derives them from the variant")
    if variant == "a" and timm_kwargs.get("aa_layer") is not None:
        raise ValueError("aa_layer is not supported with variant 'a' (its stride lives in the 1x1 conv)")

    kind, layers = DEPTHS[depth]
    channels = tuple(max(1, round(c * width_multiplier)) for c in _STAGE_CHANNELS)
    stem = max(1, round(stem_width * width_multiplier))
    deep_stem = variant in ("c", "d")
    # timm's 7x7 stem is always 64 wide; for another width, build a deep stem of the wanted output width
    # (so the first stage is sized for it) and swap its convs for one 7x7 conv below.
    swap_stem = not deep_stem and 2 * stem != 64
    model = ResNet(
        block=Bottleneck if kind == "bottleneck" else BasicBlock,
        layers=layers,
        num_classes=num_classes,
        in_chans=in_chans,
        base_width=base_width,
        stem_width=stem,
        stem_type="deep" if deep_stem or swap_stem else "",
        avg_down=variant == "d",
        channels=channels,
        zero_init_last=False,
        **timm_kwargs,
    )
    if swap_stem:
        # Same device and dtype as the stem it replaces: from timm's device=/dtype= kwargs or a device context.
        dd = {"device": model.conv1[0].weight.device, "dtype": model.conv1[0].weight.dtype}
        model.conv1 = nn.Conv2d(in_chans, 2 * stem, kernel_size=7, stride=2, padding=3, bias=False, **dd)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm's init
    if variant == "a":
        for block in model.modules():
            if isinstance(block, Bottleneck) and block.conv2.stride != (1, 1):
                block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
    if small_input:
        model.maxpool = nn.Identity()
        for info in model.feature_info:
            if info["module"].startswith("layer"):
                info["reduction"] //= 2
    if zero_gamma:
        zero_gamma_(model)
    return model


# Residual block classes: timm and torchvision (Bottleneck.bn3 / BasicBlock.bn2), mmdet / mmseg /
# mmpretrain (norm3 / norm2 properties over attributes such as bn3 or gn3) and Detectron2
# (BottleneckBlock / DeformBottleneckBlock conv3.norm, BasicBlock conv2.norm).
_BLOCK_CLASS_NAMES = frozenset({"Bottleneck", "BasicBlock", "BottleneckBlock", "DeformBottleneckBlock"})
_LAST_NORM_PATHS = {
    "bottleneck": ("norm3", "bn3", "conv3.norm"),
    "basic": ("norm2", "bn2", "conv2.norm"),
}


def _find(module: nn.Module, path: str) -> nn.Module | None:
    for name in path.split("."):
        module = getattr(module, name, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def zero_gamma_(model: nn.Module) -> int:
    """Zero the last normalization weight (gamma) of every residual block in place; return how many.

    Each block then starts as the identity (paper 3.1). Blocks are recognised by class name, from timm,
    torchvision, MMDetection / MMSegmentation / MMPretrain and Detectron2 (see ``_BLOCK_CLASS_NAMES``);
    a block with a third conv is a bottleneck (its last norm is ``norm3`` / ``bn3`` / ``conv3.norm``),
    otherwise a basic block (``norm2`` / ``bn2`` / ``conv2.norm``). Frozen BN weights (buffers) are zeroed
    too. Raises ValueError if no residual block with a normalization weight is found.
    """
    blocks = [m for m in model.modules() if type(m).__name__ in _BLOCK_CLASS_NAMES]
    zeroed = 0
    for block in blocks:
        kind = "bottleneck" if isinstance(getattr(block, "conv3", None), nn.Module) else "basic"
        for path in _LAST_NORM_PATHS[kind]:
            norm = _find(block, path)
            if norm is not None:
                break
        weight = getattr(norm, "weight", None)
        if isinstance(weight, torch.Tensor):
            with torch.no_grad():
                weight.zero_()
            zeroed += 1
    if zeroed == 0:
        raise ValueError(
            f"zero_gamma_ found no residual block with a normalization weight in {type(model).__name__} "
            f"({len(blocks)} blocks named one of {sorted(_BLOCK_CLASS_NAMES)}); it supports timm, "
            "torchvision, MMDetection/MMSegmentation and Detectron2 ResNets"
        )
    return zeroed
