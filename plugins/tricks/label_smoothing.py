"""Label smoothing (paper 5.2) and soft-target cross entropy (the loss of mixup's targets, 5.4).

Both label-smoothing forms run on torch's native ``F.cross_entropy``, so they cost what it costs:

- ``form="uniform"`` (timm, torchvision, MMPretrain): ``q = 1 - eps + eps / K`` on the true class and
  ``eps / K`` on every other; it *is* ``F.cross_entropy(..., label_smoothing=eps)``.
- ``form="paper"``: ``q = 1 - eps`` on the true class and ``eps / (K - 1)`` on every other. That is the
  uniform form with ``eps' = eps * K / (K - 1)``: each other class gets ``eps' / K = eps / (K - 1)`` and the
  true class ``1 - eps' + eps' / K = 1 - eps``.

Per-class ``weight`` follows torch's semantics for both forms: the loss of one sample (or pixel) with
target distribution ``q`` is ``sum_c weight[c] * q[c] * -log p[c]``, and ``reduction="mean"`` divides the sum
over non-ignored samples by ``sum weight[target]`` over those samples (the plain mean without weight).
Samples whose target is ``ignore_index`` contribute 0 and are not counted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SMOOTHING_FORMS",
    "check_loss_args",
    "LabelSmoothingCrossEntropy",
    "label_smoothing_cross_entropy",
    "soft_target_cross_entropy",
]

SMOOTHING_FORMS = ("paper", "uniform")
_REDUCTIONS = ("mean", "sum", "none")


def _check_epsilon(epsilon: float) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be a number in [0, 1), got {epsilon!r}")
    return float(epsilon)


def _check_choice(name: str, value: str, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise ValueError(f"{name} must be one of {accepted}, got {value!r}")
    return value


def _check_temperature(temperature: float) -> float:
    ok = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not ok or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def check_loss_args(epsilon: float = 0.0, form: str = "paper", temperature: float | None = None) -> None:
    """Raise the losses' own ValueError if ``epsilon``, ``form`` or (when given) ``temperature`` is out of range.

    For adapters that hold these values before any batch exists (an MMDetection loss is built from its config).
    """
    _check_epsilon(epsilon)
    _check_choice("form", form, SMOOTHING_FORMS)
    if temperature is not None:
        _check_temperature(temperature)


def _composite_smoothing(
    logits: Tensor,
    target: Tensor,
    eps_uniform: float,
    ignore_index: int,
    reduction: str,
    weight: Tensor | None,
) -> Tensor:
    # torch's label-smoothed cross entropy written out; only needed when eps_uniform > 1, which
    # F.cross_entropy refuses (paper form with epsilon > (K - 1) / K).
    logp = F.log_softmax(logits, dim=1)
    nll = F.nll_loss(logp, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    if weight is not None:
        shape = [1] * logp.ndim
        shape[1] = -1
        smooth = -(logp * weight.view(shape)).sum(dim=1)
    else:
        smooth = -logp.sum(dim=1)
    ignored = target == ignore_index
    smooth = smooth.masked_fill(ignored, 0.0)
    if reduction == "mean":
        kept = target[~ignored]
        denominator = weight[kept].sum() if weight is not None else kept.numel()
        smooth = smooth.sum() / denominator
    elif reduction == "sum":
        smooth = smooth.sum()
    num_classes = logits.shape[1]
    return (1.0 - eps_uniform) * nll + (eps_uniform / num_classes) * smooth


def uniform_epsilon(epsilon: float, num_classes: int, form: str = "paper") -> float:
    """The uniform-form smoothing (``eps / K`` on every class) that gives ``form``'s targets.

    ``"uniform"`` returns ``epsilon``; ``"paper"`` returns ``epsilon * K / (K - 1)``, since each other class
    then gets ``eps' / K = eps / (K - 1)`` and the true class ``1 - eps' + eps' / K = 1 - eps``. Used where a
    tool only speaks the uniform form (mixup's soft targets, ``F.cross_entropy``).
    """
    epsilon = _check_epsilon(epsilon)
    _check_choice("form", form, SMOOTHING_FORMS)
    if form == "uniform" or epsilon == 0:
        return epsilon
    if num_classes < 2:
        raise ValueError(f"form='paper' needs num_classes >= 2, got {num_classes!r}")
    return epsilon * num_classes / (num_classes - 1)


def label_smoothing_cross_entropy(
    logits: Tensor,
    target: Tensor,
    epsilon: float = 0.1,
    form: str = "paper",
    ignore_index: int = -100,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    """Cross entropy against label-smoothed targets (see the module docstring for both forms and weights).

    Args:
        logits: ``(N, K)`` or ``(N, K, d1, ...)`` (e.g. segmentation ``(N, K, H, W)``), class dim 1.
        target: integer class indices, ``(N,)`` or ``(N, d1, ...)``.
        epsilon: smoothing in [0, 1) (default 0.1, the paper's value); 0 gives plain cross entropy.
        form: ``"paper"`` (default, ``eps / (K - 1)`` per other class) or ``"uniform"`` (``eps / K``).
        ignore_index: target value that contributes nothing (default -100; mmseg uses 255).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        weight: optional per-class weight of shape ``(K,)``.
    """
    epsilon = _check_epsilon(epsilon)
    _check_choice("form", form, SMOOTHING_FORMS)
    _check_choice("reduction", reduction, _REDUCTIONS)
    if logits.ndim < 2:
        raise ValueError(f"logits must have shape (N, K) or (N, K, d1, ...), got {tuple(logits.shape)}")
    eps_uniform = uniform_epsilon(epsilon, logits.shape[1], form)
    if eps_uniform > 1.0:
        return _composite_smoothing(logits, target, eps_uniform, ignore_index, reduction, weight)
    return F.cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=eps_uniform,
    )


class LabelSmoothingCrossEntropy(nn.Module):
    """Module form of :func:`label_smoothing_cross_entropy`; ``weight`` is kept as a non-persistent buffer.

    Args:
        epsilon: smoothing in [0, 1) (default 0.1).
        form: ``"paper"`` (default) or ``"uniform"``.
        ignore_index: target value to ignore (default -100).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        weight: optional per-class weight ``(K,)`` (default None).
    """

    def __init__(
        self,
        epsilon: float = 0.1,
        form: str = "paper",
        ignore_index: int = -100,
        reduction: str = "mean",
        weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.epsilon = _check_epsilon(epsilon)
        self.form = _check_choice("form", form, SMOOTHING_FORMS)
        self.reduction = _check_choice("reduction", reduction, _REDUCTIONS)
        self.ignore_index = int(ignore_index)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return label_smoothing_cross_entropy(
            logits, target, self.epsilon, self.form, self.ignore_index, self.reduction, self.weight
        )

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, form={self.form!r}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"


def soft_target_cross_entropy(logits: Tensor, soft_targets: Tensor, reduction: str = "mean") -> Tensor:
    """``-sum_c q[c] * log softmax(logits)[c]`` per sample, for mixup or distillation targets.

    Args:
        logits: ``(N, K)`` or ``(N, K, d1, ...)``.
        soft_targets: target probabilities of the same shape (summing to 1 over dim 1).
        reduction: ``"mean"`` over samples and positions (default), ``"sum"`` or ``"none"``.
    """
    _check_choice("reduction", reduction, _REDUCTIONS)
    if logits.ndim < 2 or soft_targets.shape != logits.shape or not soft_targets.is_floating_point():
        raise ValueError(
            f"soft_targets must be a float tensor of the logits' shape (N, K, ...), got {soft_targets.dtype} "
            f"{tuple(soft_targets.shape)} for logits {tuple(logits.shape)}"
        )
    return F.cross_entropy(logits, soft_targets, reduction=reduction)
