"""Expected calibration error (Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3).

The top-1 confidences ``max softmax(logits)`` are put in ``bins`` equal-width bins of (0, 1] (bin ``b`` holds
``b/B < conf <= (b+1)/B``); the error is ``sum_b n_b / N * |acc(b) - conf(b)|`` with ``acc(b)`` and ``conf(b)``
the bin's accuracy and mean confidence. Label smoothing and mixup are known to move it (Mueller et al. 2019;
Thulasidasan et al. 2019), which is why the study logs it beside top-1.

:class:`CalibrationBins` accumulates the per-bin sums over batches (and over processes: its ``state`` is one
tensor to all-reduce), so that a validation pass never holds every logit.
"""

from __future__ import annotations

import torch

__all__ = ["CalibrationBins", "expected_calibration_error"]


class CalibrationBins:
    """Per-bin counts, summed confidences and summed correct predictions.

    Args:
        bins: number of equal-width confidence bins (15, as Guo et al.); at least 1.
    """

    def __init__(self, bins: int = 15) -> None:
        if int(bins) != bins or bins < 1:
            raise ValueError(f"bins: expected an integer >= 1, got {bins!r}")
        self.bins = int(bins)
        self.state = torch.zeros(3, self.bins, dtype=torch.float64)  # count, confidence sum, correct sum

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``logits [N, K]`` and integer class targets ``[N]`` (or soft targets ``[N, K]``,
        whose argmax is the class)."""
        if target.ndim == 2:
            target = target.argmax(dim=1)
        probs = logits.detach().double().softmax(dim=1)
        confidence, predicted = probs.max(dim=1)
        correct = (predicted == target.to(predicted.device)).double()
        index = (confidence * self.bins).ceil().long().clamp_(1, self.bins) - 1
        state = torch.zeros_like(self.state)
        state[0].index_add_(0, index.cpu(), torch.ones_like(correct).cpu())
        state[1].index_add_(0, index.cpu(), confidence.cpu())
        state[2].index_add_(0, index.cpu(), correct.cpu())
        self.state += state

    def ece(self) -> float:
        """The expected calibration error in [0, 1] (0 when nothing was added)."""
        count, conf, correct = self.state
        total = count.sum()
        if total == 0:
            return 0.0
        return float(((conf - correct).abs()).sum() / total)


def expected_calibration_error(logits: torch.Tensor, target: torch.Tensor, bins: int = 15) -> float:
    """ECE of one set of predictions (:class:`CalibrationBins` over a single batch)."""
    acc = CalibrationBins(bins)
    acc.update(logits, target)
    return acc.ece()
