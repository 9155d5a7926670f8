"""Label smoothing and knowledge distillation as OpenMMLab loss modules.

Registry contract (MODELS): ``LabelSmoothingCrossEntropyLoss`` is called exactly like MMDetection's and
MMSegmentation's ``CrossEntropyLoss`` (``use_sigmoid=False``): ``loss(cls_score, label, weight=None,
avg_factor=None, reduction_override=None, ignore_index=None)``, so it fits ``roi_head.bbox_head.loss_cls``
and ``decode_head.loss_decode``. ``KnowledgeDistillationLoss`` is called like an MMPretrain classification
loss with the teacher's logits added. The formulas are in :mod:`plugins.losses`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from plugins.losses import check_loss_args, distillation_loss, label_smoothing_cross_entropy

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

    With ``epsilon=0`` it returns what MMDetection's and MMSegmentation's ``CrossEntropyLoss(use_sigmoid=False)``
    return (values and gradients), including their ``weight``/``avg_factor``/``avg_non_ignore`` rules. In a
    Faster R-CNN box head the logits have ``K + 1`` columns (background last) and the smoothing spreads over
    all of them, background included; in a decode head the logits are ``(N, K, H, W)`` and pixels labelled
    ``ignore_index`` contribute nothing.

    The per-element loss is ``plugins.losses.label_smoothing_cross_entropy(..., reduction="none")``; then
    ``weight`` multiplies it and the reduction follows OpenMMLab: ``mean`` divides by ``avg_factor`` when given,
    else by the number of elements (ignored ones included, as ``avg_non_ignore=False`` does in both
    frameworks) or, with ``avg_non_ignore=True``, by the number of non-ignored elements. ``class_weight`` scales
    each class's term as torch's ``weight`` does; a ``mean`` still divides by the element count, as
    MMDetection's does (MMSegmentation's own loss divides by the summed class weights of the labels instead).

    Args:
        epsilon: smoothing in [0, 1) (default 0.1, the paper's).
        form: ``"paper"`` (default: ``1 - eps`` on the true class, ``eps / (K - 1)`` on each other) or
            ``"uniform"`` (``eps / K`` spread over all classes, as torch's ``label_smoothing``).
        loss_weight: factor of the returned loss (default 1.0).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``; ``reduction_override`` wins at call time.
        ignore_index: label to ignore when the caller gives none (default None: -100, torch's and mmdet's
            default; MMSegmentation's decode heads pass their own, usually 255).
        class_weight: optional per-class weights, length K (K + 1 in a box head). Default None.
        loss_name: key of this loss in MMSegmentation's loss dict; must start with ``loss_`` to be
            back-propagated (default ``"loss_ce"``).
        avg_non_ignore: average a ``mean`` over non-ignored elements only (default False, as OpenMMLab).
    """

    # Read by some MMDetection heads (e.g. DIIHead) to choose softmax over sigmoid scores.
    use_sigmoid = False

    def __init__(
        self,
        epsilon: float = 0.1,
        form: str = "paper",
        loss_weight: float = 1.0,
        reduction: str = "mean",
        ignore_index: int | None = None,
        class_weight: list[float] | None = None,
        loss_name: str = "loss_ce",
        avg_non_ignore: bool = False,
    ) -> None:
        super().__init__(loss_name)
        check_loss_args(epsilon, form)
        self.epsilon = float(epsilon)
        self.form = form
        self.loss_weight = float(loss_weight)
        self.reduction = _check_reduction("reduction", reduction)
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")
        self.ignore_index = ignore_index
        if class_weight is not None and (
            isinstance(class_weight, str) or not all(isinstance(w, int | float) for w in class_weight)
        ):
            raise ValueError(f"class_weight must be None or a list of numbers (one per class), got {class_weight!r}")
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]
        self.avg_non_ignore = bool(avg_non_ignore)

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
        if avg_factor is None and self.avg_non_ignore and reduction == "mean":
            avg_factor = label.numel() - (label == ignore_index).sum().item()
        return self.loss_weight * _weight_reduce(loss, weight, reduction, avg_factor)

    def extra_repr(self) -> str:
        return (
            f"epsilon={self.epsilon}, form={self.form!r}, loss_weight={self.loss_weight}, "
            f"ignore_index={self.ignore_index}, avg_non_ignore={self.avg_non_ignore}"
        )


class KnowledgeDistillationLoss(_NamedLoss):
    """The paper's distillation loss for a classifier head: ``loss_weight * plugins.losses.distillation_loss``.

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
