"""Label smoothing and knowledge distillation as OpenMMLab loss modules.

Registry contract (MODELS): ``LabelSmoothingCrossEntropyLoss`` takes every constructor argument of
MMDetection 3.3's and MMSegmentation 1.2's ``CrossEntropyLoss`` and is called exactly like them
(``use_sigmoid=False``): ``loss(cls_score, label, weight=None, avg_factor=None, reduction_override=None,
ignore_index=None)``, so a config swaps ``roi_head.bbox_head.loss_cls`` or ``decode_head.loss_decode`` by its
``type`` alone. ``KnowledgeDistillationLoss`` is called like an MMPretrain classification
loss with the teacher's logits added. The formulas are in :mod:`plugins.tricks.label_smoothing`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from mmengine.registry import DefaultScope
from torch import Tensor, nn

from plugins.tricks.distillation import distillation_loss
from plugins.tricks.label_smoothing import check_loss_args, label_smoothing_cross_entropy

_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(name: str, value: str) -> str:
    if value not in _REDUCTIONS:
        raise ValueError(f"{name} must be one of {_REDUCTIONS}, got {value!r}")
    return value


def _weight_reduce(loss: Tensor, weight: Tensor | None, reduction: str, avg_factor: float | None) -> Tensor:
    # OpenMMLab's reduction rule (mmdet/mmseg ``weight_reduce_loss``): element-wise weight, then the plain
    # reduction, or the sum divided by ``avg_factor`` when one is given.
    if weight is not None:
        loss = loss * weight.float()
    if avg_factor is None:
        if reduction == "mean":
            return loss.mean()
        return loss.sum() if reduction == "sum" else loss
    if reduction == "mean":
        # The same guard as OpenMMLab's: an all-ignored batch gives 0 instead of a division by zero.
        return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    if reduction == "none":
        return loss
    raise ValueError("avg_factor can not be used with reduction='sum'")


def _softmax_only(name: str, value: object) -> None:
    if value is not False:  # the frameworks' configs spell the default out: use_sigmoid=False, use_mask=False
        raise ValueError(
            f"LabelSmoothingCrossEntropyLoss: {name}={value!r} is not accepted (accepted: False): label smoothing "
            f"here is for softmax heads (one label per element); keep CrossEntropyLoss for a {name} head"
        )


def _class_weight(value: object) -> list[float] | None:
    """``class_weight`` as MMDetection (a list) or MMSegmentation (a list, or a .npy/.json/.yaml file) take it."""
    accepted = "accepted: None, a list of numbers (one per class) or a .npy/.json/.yaml file holding one"
    source = value
    if isinstance(value, str):
        if not os.path.isfile(value):
            raise ValueError(f"class_weight={value!r}: no such file; {accepted}")
        if value.endswith(".npy"):
            value = np.load(value, allow_pickle=False).tolist()
        elif value.endswith((".json", ".yaml", ".yml")):
            import mmengine

            value = mmengine.load(value)
        else:
            raise ValueError(f"class_weight={value!r}: unknown file type; {accepted}")
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, Sequence)
        or not value
        or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in value)
    ):
        raise ValueError(f"class_weight={source!r}; {accepted}")
    return [float(w) for w in value]


def _in_mmseg_scope() -> bool:
    scope = DefaultScope.get_current_instance()
    return scope is not None and scope.scope_name == "mmseg"


class _NamedLoss(nn.Module):
    """A loss module with MMSegmentation's ``loss_name`` contract (the key of the loss in the loss dict)."""

    def __init__(self, loss_name: str) -> None:
        super().__init__()
        if not isinstance(loss_name, str) or not loss_name:
            raise ValueError(f"loss_name must be a non-empty str, got {loss_name!r}")
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        """Key of this loss in a loss dict (``loss_`` prefix = part of MMEngine's total loss)."""
        return self._loss_name


class LabelSmoothingCrossEntropyLoss(_NamedLoss):
    """Softmax cross entropy against label-smoothed targets, a drop-in for OpenMMLab's ``CrossEntropyLoss``.

    It takes every argument of MMDetection 3.3's and MMSegmentation 1.2's ``CrossEntropyLoss`` with the same
    meaning, so a config that inherits ``loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False,
    loss_weight=1.0)`` changes ``type`` (and adds ``epsilon``) and nothing else. With ``epsilon=0`` it returns
    what their ``CrossEntropyLoss(use_sigmoid=False)`` returns (values and gradients), including their
    ``weight``/``avg_factor``/``avg_non_ignore``/``class_weight`` rules. In a Faster R-CNN box head the logits
    have ``K + 1`` columns (background last) and the smoothing spreads over all of them, background included;
    in a decode head the logits are ``(N, K, H, W)`` and pixels labelled ``ignore_index`` contribute nothing.

    The per-element loss is ``plugins.tricks.label_smoothing.label_smoothing_cross_entropy(..., reduction="none")``; then
    ``weight`` multiplies it and the reduction follows OpenMMLab: ``mean`` divides by ``avg_factor`` when given,
    else by the number of elements (ignored ones included, as ``avg_non_ignore=False`` does in both
    frameworks) or, with ``avg_non_ignore=True``, by the number of non-ignored elements. ``class_weight`` scales
    each class's term as torch's ``weight`` does; what a ``mean`` then divides by differs between the two
    frameworks, and ``avg_class_weight`` follows the one the loss is built in (see there).

    Args:
        epsilon: smoothing in [0, 1) (default 0.1, the paper's).
        form: ``"paper"`` (default: ``1 - eps`` on the true class, ``eps / (K - 1)`` on each other) or
            ``"uniform"`` (``eps / K`` spread over all classes, as torch's ``label_smoothing``).
        loss_weight: factor of the returned loss (default 1.0).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``; ``reduction_override`` wins at call time.
        ignore_index: label to ignore when the caller gives none (default None: -100, torch's and mmdet's
            default; MMSegmentation's decode heads pass their own, usually 255).
        class_weight: optional per-class weights, length K (K + 1 in a box head): a list, or as in
            MMSegmentation the path of a ``.npy``/``.json``/``.yaml`` file holding one. Default None.
        loss_name: key of this loss in MMSegmentation's loss dict; must start with ``loss_`` to be
            back-propagated (default ``"loss_ce"``).
        avg_non_ignore: average a ``mean`` over non-ignored elements only (default False, as OpenMMLab).
        use_sigmoid: accepted for the frameworks' configs, which spell out ``use_sigmoid=False``; only False
            (label smoothing here is for softmax heads). Default False.
        use_mask: as ``use_sigmoid`` (MMDetection's and MMSegmentation's mask cross entropy); only False.
        avg_class_weight: with ``class_weight`` and no ``avg_factor``, whether a ``mean`` divides by the
            summed class weights of the labels (MMSegmentation's rule, torch's weighted mean; ignored elements
            count 0 with ``avg_non_ignore``, else 1) instead of the element count (MMDetection's rule).
            Default None: MMSegmentation's rule when built in the ``mmseg`` default scope (an mmseg config),
            MMDetection's otherwise.
    """

    # Read by some MMDetection heads (e.g. DIIHead) to choose softmax over sigmoid scores.
    use_sigmoid = False
    use_mask = False

    def __init__(
        self,
        epsilon: float = 0.1,
        form: str = "paper",
        loss_weight: float = 1.0,
        reduction: str = "mean",
        ignore_index: int | None = None,
        class_weight: list[float] | str | None = None,
        loss_name: str = "loss_ce",
        avg_non_ignore: bool = False,
        use_sigmoid: bool = False,
        use_mask: bool = False,
        avg_class_weight: bool | None = None,
    ) -> None:
        super().__init__(loss_name)
        _softmax_only("use_sigmoid", use_sigmoid)
        _softmax_only("use_mask", use_mask)
        check_loss_args(epsilon, form)
        self.epsilon = float(epsilon)
        self.form = form
        if isinstance(loss_weight, bool) or not isinstance(loss_weight, int | float):
            raise ValueError(f"loss_weight must be a number, got {loss_weight!r}")
        self.loss_weight = float(loss_weight)
        self.reduction = _check_reduction("reduction", reduction)
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")
        self.ignore_index = ignore_index
        self.class_weight = _class_weight(class_weight)
        for name, value in (("avg_non_ignore", avg_non_ignore), ("avg_class_weight", avg_class_weight)):
            if not isinstance(value, bool) and not (name == "avg_class_weight" and value is None):
                accepted = "True, False or None" if name == "avg_class_weight" else "True or False"
                raise ValueError(f"{name} must be {accepted}, got {value!r}")
        self.avg_non_ignore = avg_non_ignore
        self.avg_class_weight = _in_mmseg_scope() if avg_class_weight is None else avg_class_weight

    def forward(
        self,
        cls_score: Tensor,
        label: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
        ignore_index: int | None = None,
        **kwargs,
    ) -> Tensor:
        """Smoothed cross entropy of ``cls_score`` (``(N, C)`` or ``(N, C, H, W)``) against ``label``.

        Args:
            cls_score: logits, class dimension 1.
            label: class indices, ``(N,)`` or ``(N, H, W)``.
            weight: optional element-wise weight of ``label``'s shape (mmdet's ``label_weights``, mmseg's
                ``seg_weight``). Default None.
            avg_factor: divisor of a ``mean`` (mmdet passes the number of sampled RoIs). Default None.
            reduction_override: ``"none"``, ``"mean"`` or ``"sum"`` instead of ``reduction``. Default None.
            ignore_index: label to ignore, overriding the constructor's. Default None.
        """
        if kwargs:
            raise TypeError(f"LabelSmoothingCrossEntropyLoss got unexpected arguments {sorted(kwargs)}")
        reduction = self.reduction
        if reduction_override is not None:
            reduction = _check_reduction("reduction_override", reduction_override)
        if ignore_index is None:
            ignore_index = -100 if self.ignore_index is None else self.ignore_index
        class_weight = None if self.class_weight is None else cls_score.new_tensor(self.class_weight)
        loss = label_smoothing_cross_entropy(
            cls_score, label, self.epsilon, self.form, ignore_index, "none", class_weight
        )
        if avg_factor is None and reduction == "mean":
            ignored = label == ignore_index
            if class_weight is not None and self.avg_class_weight:
                label_weights = class_weight[torch.where(ignored, torch.zeros_like(label), label)]
                avg_factor = torch.where(ignored, float(not self.avg_non_ignore), label_weights).sum()
            elif self.avg_non_ignore:
                avg_factor = label.numel() - ignored.sum().item()
        return self.loss_weight * _weight_reduce(loss, weight, reduction, avg_factor)

    def extra_repr(self) -> str:
        return (
            f"epsilon={self.epsilon}, form={self.form!r}, loss_weight={self.loss_weight}, "
            f"ignore_index={self.ignore_index}, avg_non_ignore={self.avg_non_ignore}"
        )


class KnowledgeDistillationLoss(_NamedLoss):
    """The paper's distillation loss for a classifier head: ``loss_weight * plugins.tricks.distillation.distillation_loss``.

    Called like an MMPretrain classification loss with the teacher's logits added:
    ``loss(cls_score, label, teacher_score=..., avg_factor=None, reduction_override=None)``. ``label`` holds
    class indices ``(N,)`` or soft targets ``(N, K)`` (mixup). The loss is a batch mean, so ``avg_factor``
    may only be the batch size (what MMPretrain's ``ClsHead`` passes) and only a ``"mean"`` reduction exists.

    Args:
        temperature: ``T`` > 0 (default 20.0, the paper's).
        loss_weight: factor of the returned loss (default 1.0).
        epsilon: label smoothing of hard labels (default 0.0).
        form: smoothing form, ``"paper"`` (default) or ``"uniform"``.
        loss_name: key of this loss in a loss dict (default ``"loss_kd"``).
    """

    def __init__(
        self,
        temperature: float = 20.0,
        loss_weight: float = 1.0,
        epsilon: float = 0.0,
        form: str = "paper",
        loss_name: str = "loss_kd",
    ) -> None:
        super().__init__(loss_name)
        check_loss_args(epsilon, form, temperature)
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)
        self.epsilon = float(epsilon)
        self.form = form

    def forward(
        self,
        cls_score: Tensor,
        label: Tensor,
        teacher_score: Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
        **kwargs,
    ) -> Tensor:
        """Distillation loss of the student ``cls_score`` against ``label`` and ``teacher_score`` (``(N, K)``)."""
        if kwargs:
            raise TypeError(f"KnowledgeDistillationLoss got unexpected arguments {sorted(kwargs)}")
        if teacher_score is None:
            raise ValueError("KnowledgeDistillationLoss needs teacher_score (the teacher's logits), got None")
        if reduction_override not in (None, "mean"):
            raise ValueError(f"reduction_override must be None or 'mean', got {reduction_override!r}")
        if avg_factor is not None and avg_factor != cls_score.shape[0]:
            raise ValueError(
                f"avg_factor must be None or the batch size {cls_score.shape[0]} (the loss is a batch mean), "
                f"got {avg_factor!r}"
            )
        loss = distillation_loss(cls_score, teacher_score, label, self.temperature, self.epsilon, self.form)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, loss_weight={self.loss_weight}, epsilon={self.epsilon}"
