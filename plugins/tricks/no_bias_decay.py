"""No bias decay (paper 3.1): weight decay only on the weights of convolution and fully-connected layers.

Biases and the gamma/beta of normalization layers get no decay. Two param groups, never one per parameter.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

__all__ = ["describe_param_groups", "no_bias_decay_param_groups"]

_NORM_TYPES = (_NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.RMSNorm)


def _is_norm(module: nn.Module) -> bool:
    # Frameworks ship their own norm classes (mmcv, Detectron2 FrozenBatchNorm2d / NaiveSyncBatchNorm,
    # timm's LayerNorm2d...); their names all carry "Norm", and none of them is a conv or linear layer.
    return isinstance(module, _NORM_TYPES) or "Norm" in type(module).__name__


def no_bias_decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into a decay and a no-decay group.

    - ``decay`` (``weight_decay``): the ``weight`` of every convolution (any ``nn.modules.conv._ConvNd``,
      transposed ones included) and every ``nn.Linear``;
    - ``no_decay`` (0.0): every bias, and every parameter of a normalization layer (BatchNorm, SyncBatchNorm,
      InstanceNorm, GroupNorm, LayerNorm, RMSNorm, and any class whose name contains "Norm");
    - parameters of any other module (embeddings, learned scalars, positional tables...): 1-D ones go to
      ``no_decay``, the others to ``decay``.

    Parameters with ``requires_grad=False`` are left out; a parameter shared by several modules is counted
    once (where it is met first in ``model.named_modules()`` order). Buffers (e.g. frozen BN statistics) are
    not parameters and never appear.

    Args:
        model: the model to split.
        weight_decay: decay of the first group, >= 0 (the paper: 1e-4).

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay, "name": "decay"},
        {"params": [...], "weight_decay": 0.0, "name": "no_decay"}]``, ready for a torch optimizer; both
        are always present, possibly with an empty ``params`` list.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, int | float) or not weight_decay >= 0:
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        norm = _is_norm(module)
        weight_layer = isinstance(module, _ConvNd | nn.Linear)
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if not param.requires_grad:
                continue
            if weight_layer and name == "weight":
                decay.append(param)
            elif norm or name == "bias" or param.ndim <= 1:
                no_decay.append(param)
            else:
                decay.append(param)
    return [
        {"params": decay, "weight_decay": float(weight_decay), "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def describe_param_groups(groups: list[dict[str, Any]]) -> str:
    """One line per group: name, weight decay, number of tensors and of scalar values."""
    lines = []
    for index, group in enumerate(groups):
        params = list(group["params"])
        values = sum(p.numel() for p in params)
        name = group.get("name", f"group{index}")
        lines.append(
            f"{name}: weight_decay={group.get('weight_decay', 'default')}, "
            f"{len(params)} tensors, {values:,} values"
        )
    return "\n".join(lines)
