"""Mixup (paper 5.4): train on convex combinations of two examples and of their label distributions.

``lambda ~ Beta(alpha, alpha)``; ``x = lambda * x_i + (1 - lambda) * x_j``; ``y = lambda * y_i + (1 - lambda) * y_j``.
As in timm's batch-mode ``Mixup``, one ``lambda`` is drawn per batch and sample ``i`` is paired with sample
``N - 1 - i`` (the batch reversed, ``x.flip(0)``), so no permutation has to be drawn or stored.

Randomness comes only from the ``torch.Generator`` passed in (the global torch generator when None): one
64-bit seed is drawn from it per batch and feeds a NumPy ``Generator`` that samples the Beta distribution,
so the same generator state always gives the same ``lambda``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Mixup", "mixup", "sample_mixup_lambda", "smoothed_one_hot"]


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0 (0 disables mixup), got {alpha!r}")
    return float(alpha)


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return num_classes


def _check_smoothing(label_smoothing: float) -> float:
    ok = isinstance(label_smoothing, int | float) and not isinstance(label_smoothing, bool)
    if not ok or not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
    return float(label_smoothing)


def sample_mixup_lambda(alpha: float, generator: torch.Generator | None = None) -> float:
    """Draw ``lambda ~ Beta(alpha, alpha)`` from ``generator``; ``alpha == 0`` returns 1.0 without drawing."""
    alpha = _check_alpha(alpha)
    if alpha == 0:
        return 1.0
    device = generator.device if generator is not None else None
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, dtype=torch.int64, device=device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def smoothed_one_hot(targets: Tensor, num_classes: int, label_smoothing: float = 0.0) -> Tensor:
    """One-hot rows smoothed timm's way: ``1 - eps + eps / K`` on the class, ``eps / K`` elsewhere (float32).

    This is the uniform form (see :mod:`plugins.tricks.label_smoothing`), the one timm's ``Mixup`` uses.
    """
    num_classes = _check_num_classes(num_classes)
    eps = _check_smoothing(label_smoothing)
    off = eps / num_classes
    index = targets.long().reshape(-1, 1)
    return torch.full((index.shape[0], num_classes), off, device=targets.device).scatter_(
        1, index, 1.0 - eps + off
    )


def mixup(
    images: Tensor,
    targets: Tensor,
    num_classes: int,
    alpha: float = 0.2,
    generator: torch.Generator | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, float]:
    """Mix a batch with its reverse.

    Args:
        images: ``(N, ...)`` batch (not modified).
        targets: class indices ``(N,)``.
        num_classes: ``K`` of the soft targets.
        alpha: Beta parameter (default 0.2, the paper's value); ``alpha == 0`` means no mixing
            (``lambda = 1``, the images come back unchanged and nothing is drawn).
        generator: source of randomness (default None: torch's global generator).
        label_smoothing: smoothing of the one-hot rows before mixing, timm's uniform form (default 0.0).

    Returns:
        ``(mixed_images, soft_targets, lam)``: ``lam * images + (1 - lam) * images.flip(0)``,
        ``lam * onehot(targets) + (1 - lam) * onehot(targets.flip(0))`` as float32 ``(N, K)``, and ``lam``.
    """
    if targets.ndim != 1 or targets.is_floating_point() or targets.shape[0] != images.shape[0]:
        raise ValueError(
            f"targets must be class indices of shape (N,) = ({images.shape[0]},), "
            f"got {targets.dtype} {tuple(targets.shape)}"
        )
    soft = smoothed_one_hot(targets, num_classes, label_smoothing).to(images.device)
    lam = sample_mixup_lambda(alpha, generator)
    if lam == 1.0:
        return images, soft, lam
    # Same arithmetic as timm's batch mode, so both give bit-identical batches for the same lambda.
    mixed = images * lam + images.flip(0) * (1.0 - lam)
    soft = soft * lam + soft.flip(0) * (1.0 - lam)
    return mixed, soft, lam


class Mixup:
    """Batch mixup with its own seeded generator: ``Mixup(10, seed=0)(images, targets)``.

    Args:
        num_classes: ``K`` of the soft targets.
        alpha: Beta parameter (default 0.2); 0 disables mixing.
        label_smoothing: timm-style smoothing of the targets (default 0.0).
        seed: seed of the private ``torch.Generator`` (default 0).

    ``state_dict()`` holds the generator state, so a resumed run draws the same lambdas.
    """

    def __init__(
        self, num_classes: int, alpha: float = 0.2, label_smoothing: float = 0.0, seed: int = 0
    ) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.alpha = _check_alpha(alpha)
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, float]:
        return mixup(images, targets, self.num_classes, self.alpha, self.generator, self.label_smoothing)

    def state_dict(self) -> dict[str, Any]:
        return {"generator_state": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.generator.set_state(state_dict["generator_state"])

    def __repr__(self) -> str:
        return (
            f"Mixup(num_classes={self.num_classes}, alpha={self.alpha}, "
            f"label_smoothing={self.label_smoothing})"
        )
