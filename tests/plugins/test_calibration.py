"""Expected calibration error against Guo et al. 2017's definition, computed directly from its formula."""

import pytest
import torch

from plugins.runtime.calibration import CalibrationBins, expected_calibration_error


def _ece_by_formula(logits, target, bins):
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [i for i in range(len(conf)) if lo < float(conf[i]) <= hi]
        if inside:
            acc = sum(float(pred[i] == target[i]) for i in inside) / len(inside)
            mean_conf = sum(float(conf[i]) for i in inside) / len(inside)
            total += len(inside) / len(conf) * abs(acc - mean_conf)
    return total


@pytest.mark.parametrize("bins", [1, 10, 15])
def test_ece_equals_the_formula_and_does_not_depend_on_batching(bins):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 10, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, 10, (300,), generator=g)
    expected = _ece_by_formula(logits, target, bins)
    assert expected_calibration_error(logits, target, bins) == pytest.approx(expected, abs=1e-12)
    acc = CalibrationBins(bins)
    for chunk in range(0, 300, 64):
        acc.update(logits[chunk:chunk + 64], target[chunk:chunk + 64])
    assert acc.ece() == pytest.approx(expected, abs=1e-12)


def test_a_perfectly_calibrated_and_a_confidently_wrong_model():
    target = torch.arange(4)
    confident_right = torch.eye(4) * 100
    assert expected_calibration_error(confident_right, target) == pytest.approx(0.0, abs=1e-12)
    confident_wrong = torch.eye(4).roll(1, dims=1) * 100
    assert expected_calibration_error(confident_wrong, target) == pytest.approx(1.0)
    soft = torch.nn.functional.one_hot(target, 4).float()  # soft targets (mixup) count by their argmax
    assert expected_calibration_error(confident_right, soft) == pytest.approx(0.0, abs=1e-12)


def test_bad_bins_name_the_argument():
    with pytest.raises(ValueError, match="bins: expected an integer >= 1, got 0"):
        CalibrationBins(0)


def test_under_and_overconfident_bins_do_not_cancel():
    """A bin that is right more often than it is confident and one that is confident and wrong both count."""
    k = 10
    shy = torch.zeros(50, k)
    shy[:, 0] = 2.0  # softmax max ~0.45, always right
    bold = torch.zeros(50, k)
    bold[:, 0] = 12.0  # softmax max ~1.0, always wrong
    logits = torch.cat([shy, bold]).double()
    target = torch.cat([torch.zeros(50, dtype=torch.long), torch.ones(50, dtype=torch.long)])
    conf_shy, conf_bold = shy.double().softmax(1)[0, 0].item(), bold.double().softmax(1)[0, 0].item()
    expected = 0.5 * (1 - conf_shy) + 0.5 * conf_bold
    assert expected_calibration_error(logits, target) == pytest.approx(expected, abs=1e-12)
    assert expected_calibration_error(logits, target) == pytest.approx(_ece_by_formula(logits, target, 15), abs=1e-12)
