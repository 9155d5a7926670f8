"""plugins.tricks.detection_mixup against hand computations: the canvas, the box weights, the sample weights."""

import re

import numpy as np
import pytest
import torch

from plugins.tricks.detection_mixup import (
    batch_partners,
    check_fixed_ratio,
    check_mix_weights,
    draw_ratio,
    mix_detection_pair,
    mix_images,
    mixup_active,
    ratio_generator,
    sample_mix_ratio,
    sample_mix_weights,
    weighted_mean,
)


def test_mix_images_places_both_top_left_on_the_larger_canvas():
    a = torch.arange(1, 7, dtype=torch.uint8).view(1, 2, 3)  # H 2, W 3
    b = torch.arange(10, 70, 10, dtype=torch.uint8).view(1, 3, 2)  # H 3, W 2
    r = 0.25
    mixed = mix_images(a, b, r)
    expected = np.zeros((1, 3, 3), dtype=np.float64)
    for y in range(3):
        for x in range(3):
            if y < 2 and x < 3:
                expected[0, y, x] += r * float(a[0, y, x])
            if y < 3 and x < 2:
                expected[0, y, x] += (1 - r) * float(b[0, y, x])
    assert mixed.dtype == torch.float32 and mixed.shape == (1, 3, 3)
    torch.testing.assert_close(mixed, torch.from_numpy(expected).float(), rtol=0, atol=1e-6, msg="canvas pixels")


def test_mix_detection_pair_keeps_every_box_with_its_image_weight():
    image_a, image_b = torch.rand(3, 8, 10), torch.rand(3, 12, 6)
    boxes_a, boxes_b = torch.tensor([[0.0, 0, 4, 4], [2, 2, 9, 7]]), torch.tensor([[1.0, 1, 5, 11]])
    labels_a, labels_b = torch.tensor([3, 1]), torch.tensor([7])
    r = 0.7
    mixed = mix_detection_pair(image_a, boxes_a, labels_a, image_b, boxes_b, labels_b, r)
    assert mixed.image.shape == (3, 12, 10)
    torch.testing.assert_close(mixed.boxes, torch.cat([boxes_a, boxes_b]), rtol=0, atol=0, msg="boxes do not move")
    assert mixed.labels.tolist() == [3, 1, 7]
    torch.testing.assert_close(mixed.weights, torch.tensor([0.7, 0.7, 1 - 0.7]), rtol=0, atol=0, msg="box weights")
    torch.testing.assert_close(mixed.image[:, 8:, 6:], torch.zeros(3, 4, 4), rtol=0, atol=0, msg="outside both")
    torch.testing.assert_close(mixed.image[:, :8, 6:], r * image_a[:, :, 6:], rtol=0, atol=1e-7, msg="only a")


def test_ratio_is_a_seeded_beta_draw():
    draws = [sample_mix_ratio(1.5, ratio_generator(0, k)) for k in range(2000)]
    again = [sample_mix_ratio(1.5, ratio_generator(0, k)) for k in range(2000)]
    assert draws == again, "the same (seed, step) gives the same ratio"
    assert draws != [sample_mix_ratio(1.5, ratio_generator(1, k)) for k in range(2000)]
    values = np.array(draws)
    assert ((values > 0) & (values < 1)).all()
    # Beta(1.5, 1.5): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 1/16
    assert abs(values.mean() - 0.5) < 0.02 and abs(values.var() - 1 / 16) < 0.01


def test_sample_weights_take_the_matched_box_weight_on_foreground_and_one_elsewhere():
    gt_weights = torch.tensor([0.3, 0.3, 0.7])
    matched = torch.tensor([2, 0, 1, 2, 0])
    foreground = torch.tensor([True, True, False, True, False])
    weights = sample_mix_weights(gt_weights, matched, foreground)
    torch.testing.assert_close(weights, torch.tensor([0.7, 0.3, 1.0, 0.7, 1.0]), rtol=0, atol=0)
    torch.testing.assert_close(sample_mix_weights(torch.zeros(0), torch.zeros(3, dtype=torch.long),
                                                  torch.zeros(3, dtype=torch.bool)), torch.ones(3), rtol=0, atol=0)


def test_weighted_mean_keeps_the_plain_normaliser():
    loss, w = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.5, 1.0, 0.25])
    torch.testing.assert_close(weighted_mean(loss, w), torch.tensor((0.5 + 2.0 + 1.0) / 3), rtol=0, atol=1e-7)
    torch.testing.assert_close(weighted_mean(loss, torch.ones(3)), loss.mean(), rtol=0, atol=0)


def test_pairs_and_stop():
    assert batch_partners(4) == [3, 2, 1, 0]
    assert batch_partners(3) == [2, None, 0]
    assert [mixup_active(k, 10, 0.8) for k in range(10)] == [True] * 8 + [False] * 2


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), True, "1.5"])
def test_bad_alpha_names_the_argument(alpha):
    with pytest.raises(ValueError, match=re.escape(f"alpha={alpha!r} is not accepted; accepted: a finite number > 0")):
        sample_mix_ratio(alpha, ratio_generator(0, 0))


def test_weights_outside_zero_one_are_refused():
    with pytest.raises(ValueError, match=r"gt_mix_weights holds 1\.5, which is not accepted; accepted: box weights"):
        check_mix_weights(torch.tensor([0.5, 1.5]), "gt_mix_weights")


def test_a_fixed_ratio_is_used_as_is_and_draws_nothing():
    generator = ratio_generator(0, 0)
    state = generator.get_state()
    assert draw_ratio(1.5, generator, fixed_ratio=0.5) == 0.5
    assert torch.equal(generator.get_state(), state), "nothing drawn"
    assert draw_ratio(1.5, ratio_generator(0, 0)) == sample_mix_ratio(1.5, ratio_generator(0, 0))


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.5, True])
def test_bad_fixed_ratio_names_the_argument(ratio):
    with pytest.raises(ValueError, match=re.escape(f"fixed_ratio={ratio!r} is not accepted; accepted: a number in (0, 1)")):
        check_fixed_ratio(ratio)
