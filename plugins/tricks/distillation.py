"""Knowledge distillation (paper 5.3): ``CE(p, softmax(z)) + T^2 * CE(softmax(r / T), softmax(z / T))``.

The label term ``p`` may be smoothed with the settings of :mod:`plugins.tricks.label_smoothing`, or be soft
targets (mixup's).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .label_smoothing import (
    SMOOTHING_FORMS,
    _check_choice,
    _check_epsilon,
    _check_temperature,
)

__all__ = ["DistillationLoss", "distillation_loss"]


def _softmax_and_logsumexp(logits: Tensor, top: Tensor) -> tuple[Tensor, Tensor]:
    # One exp pass for both. With top = max over dim 1 (keepdim), the largest probability is
    # 1 / sum(exp(x - top)) >= 1 / K, so logsumexp(x) = top - log(max p) loses no precision and never
    # sees an underflowed probability.
    probs = torch.softmax(logits, dim=1)
    return probs, top - probs.amax(dim=1, keepdim=True).log()


def _flat_dot(a: Tensor, b: Tensor) -> Tensor:
    return torch.dot(a.reshape(-1), b.reshape(-1))


class _DistillationCrossEntropy(torch.autograd.Function):
    """The paper's distillation loss (mean over the batch) with its gradient formed in the forward pass.

    ``target`` is either class indices with the smoothed values ``on`` (true class) and ``off`` (others),
    or a dense ``(N, K)`` distribution ``q``. The gradient is
    ``(softmax(z) - q + T * (softmax(z / T) - softmax(r / T))) / N``; computing it next to the three
    softmaxes the loss needs anyway costs no further exp pass, where autograd through two log-softmaxes
    costs two (torch's composite form of this loss takes about 2.2x plain cross entropy plus a softmax).
    """

    @staticmethod
    def forward(ctx, logits, teacher_logits, target, temperature, on, off):
        x = logits.to(torch.promote_types(logits.dtype, torch.float32))
        batch = x.shape[0]
        top = x.amax(dim=1, keepdim=True)
        probs, lse = _softmax_and_logsumexp(x, top)
        if target.is_floating_point():
            q = target.to(x.dtype)
            hard = lse.sum() - _flat_dot(q, x)
            direction = probs.sub_(q)
        else:
            index = target.long().unsqueeze(1)
            true_logits = x.gather(1, index)
            hard = lse.sum() - (on - off) * true_logits.sum()
            direction = probs
            if off:
                hard = hard - off * x.sum()
                direction.sub_(off)
            direction.scatter_add_(1, index, torch.full_like(true_logits, -(on - off)))
        # Temporaries die at once (no names): on the CPU every extra live buffer means fresh pages to fault in.
        teacher = torch.softmax(teacher_logits.to(x.dtype) * (1.0 / temperature), dim=1)
        probs_t, lse_t = _softmax_and_logsumexp(x * (1.0 / temperature), top * (1.0 / temperature))
        soft = lse_t.sum() - _flat_dot(teacher, x) / temperature
        direction.add_(probs_t.sub_(teacher), alpha=temperature)
        ctx.scale = 1.0 / batch
        ctx.input_dtype = logits.dtype
        ctx.save_for_backward(direction)
        return ((hard + temperature * temperature * soft) / batch).to(logits.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (direction,) = ctx.saved_tensors
        return (direction * (grad_output * ctx.scale)).to(ctx.input_dtype), None, None, None, None, None


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    temperature: float = 20.0,
    epsilon: float = 0.0,
    form: str = "paper",
) -> Tensor:
    """Knowledge distillation (paper 5.3): ``CE(p, softmax(z)) + T^2 * CE(softmax(r / T), softmax(z / T))``.

    ``z`` are the student logits, ``r`` the teacher logits (no gradient reaches them), ``p`` the true label
    distribution; each term is averaged over the batch. ``T^2`` keeps the gradient of the second term on the
    scale of the first. This is the paper's plain sum, not GluonCV's ``hard_weight`` mixture, and soft cross
    entropy rather than timm's KL form (they differ by the teacher's entropy, a constant).

    Args:
        student_logits: ``(N, K)``.
        teacher_logits: ``(N, K)``.
        target: class indices ``(N,)`` (all valid, no ignore index), or soft targets ``(N, K)`` (e.g. from
            :func:`plugins.tricks.mixup.mixup`).
        temperature: ``T`` > 0 (default 20.0, the paper's value).
        epsilon: label smoothing of class-index targets in [0, 1) (default 0.0); soft targets carry their own.
        form: smoothing form for class-index targets, ``"paper"`` (default) or ``"uniform"``.
    """
    temperature = _check_temperature(temperature)
    epsilon = _check_epsilon(epsilon)
    _check_choice("form", form, SMOOTHING_FORMS)
    if student_logits.ndim != 2 or teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"student_logits and teacher_logits must both be (N, K), got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}"
        )
    batch, num_classes = student_logits.shape
    if target.is_floating_point():
        if target.shape != student_logits.shape:
            raise ValueError(
                f"soft target must be (N, K) = {(batch, num_classes)}, got {tuple(target.shape)}"
            )
        if epsilon > 0:
            raise ValueError(
                f"epsilon must be 0 with soft targets (smooth them when building them), got {epsilon}"
            )
        on, off = 1.0, 0.0
    else:
        if target.shape != (batch,):
            raise ValueError(f"class-index target must be (N,) = ({batch},), got {tuple(target.shape)}")
        if form == "paper" and epsilon > 0 and num_classes < 2:
            raise ValueError(f"form='paper' needs at least 2 classes, got {num_classes}")
        off = (
            0.0
            if epsilon == 0
            else (epsilon / (num_classes - 1) if form == "paper" else epsilon / num_classes)
        )
        on = 1.0 - epsilon if form == "paper" else 1.0 - epsilon + off
    return _DistillationCrossEntropy.apply(
        student_logits, teacher_logits.detach(), target, temperature, on, off
    )


class DistillationLoss(nn.Module):
    """Module form of :func:`distillation_loss`; ``forward(student_logits, teacher_logits, target)``.

    Args:
        temperature: ``T`` > 0 (default 20.0).
        epsilon: label smoothing of hard targets (default 0.0).
        form: ``"paper"`` (default) or ``"uniform"``.
    """

    def __init__(self, temperature: float = 20.0, epsilon: float = 0.0, form: str = "paper") -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.epsilon = _check_epsilon(epsilon)
        self.form = _check_choice("form", form, SMOOTHING_FORMS)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor) -> Tensor:
        return distillation_loss(
            student_logits, teacher_logits, target, self.temperature, self.epsilon, self.form
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, epsilon={self.epsilon}, form={self.form!r}"
