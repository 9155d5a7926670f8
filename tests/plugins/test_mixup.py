import numpy as np
import pytest
import torch

from plugins.tricks.mixup import Mixup, mixup, sample_mixup_lambda, smoothed_one_hot

K = 10


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 4, 4, generator=g), torch.randint(0, K, (n,), generator=g)


def test_same_generator_state_same_result():
    images, targets = _batch()
    a = mixup(images, targets, K, 0.2, torch.Generator().manual_seed(7), 0.1)
    b = mixup(images, targets, K, 0.2, torch.Generator().manual_seed(7), 0.1)
    c = mixup(images, targets, K, 0.2, torch.Generator().manual_seed(8), 0.1)
    assert a[2] == b[2] and a[2] != c[2]
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)


def test_global_generator_is_used_when_none_given():
    torch.manual_seed(3)
    first = sample_mixup_lambda(0.2)
    torch.manual_seed(3)
    assert sample_mixup_lambda(0.2) == first


def test_matches_timm_batch_mixup_for_the_same_lambda():
    timm_mixup = pytest.importorskip("timm.data.mixup")
    images, targets = _batch()
    mixed, soft, lam = mixup(images, targets, K, 0.2, torch.Generator().manual_seed(1), label_smoothing=0.1)
    reference = timm_mixup.Mixup(
        mixup_alpha=0.2, cutmix_alpha=0.0, mode="batch", label_smoothing=0.1, num_classes=K
    )
    reference._params_per_batch = lambda: (lam, False)
    ref_images, ref_soft = reference(images.clone(), targets)
    torch.testing.assert_close(mixed, ref_images, rtol=0, atol=0, msg="images")
    torch.testing.assert_close(soft, ref_soft, rtol=0, atol=0, msg="soft targets")


def test_definition_pairs_with_reversed_batch():
    images, targets = _batch(4)
    mixed, soft, lam = mixup(images, targets, K, 1.0, torch.Generator().manual_seed(2))
    assert 0.0 < lam < 1.0
    for i in range(4):
        j = 3 - i
        torch.testing.assert_close(mixed[i], lam * images[i] + (1 - lam) * images[j], rtol=1e-6, atol=1e-6)
        expected = torch.zeros(K)
        expected[targets[i]] += lam
        expected[targets[j]] += 1 - lam
        torch.testing.assert_close(soft[i], expected, rtol=1e-6, atol=1e-7, msg=f"sample {i}")
    torch.testing.assert_close(soft.sum(1), torch.ones(4), rtol=0, atol=1e-6)


def test_lambda_follows_beta_distribution():
    g = torch.Generator().manual_seed(0)
    draws = np.array([sample_mixup_lambda(0.2, g) for _ in range(4000)])
    # Beta(0.2, 0.2): mean 0.5, variance 0.04 / (0.16 * 1.4) = 0.17857
    assert abs(draws.mean() - 0.5) < 0.03
    assert abs(draws.var() - 0.17857) < 0.015
    assert draws.min() >= 0.0 and draws.max() <= 1.0


def test_alpha_zero_means_no_mixing_and_no_draw():
    images, targets = _batch()
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    mixed, soft, lam = mixup(images, targets, K, 0.0, g, label_smoothing=0.1)
    assert lam == 1.0 and mixed is images
    torch.testing.assert_close(soft, smoothed_one_hot(targets, K, 0.1), rtol=0, atol=0)
    assert torch.equal(g.get_state(), state)


def test_smoothed_one_hot_is_timm_convention():
    soft = smoothed_one_hot(torch.tensor([2]), 4, 0.2)
    torch.testing.assert_close(soft, torch.tensor([[0.05, 0.05, 0.85, 0.05]]), rtol=0, atol=1e-7)


def test_mixup_class_state_round_trip():
    images, targets = _batch()
    mixer = Mixup(K, alpha=0.2, seed=11)
    mixer(images, targets)
    state = mixer.state_dict()
    ahead = [mixer(images, targets)[2] for _ in range(3)]
    resumed = Mixup(K, alpha=0.2, seed=99)
    resumed.load_state_dict(state)
    assert [resumed(images, targets)[2] for _ in range(3)] == ahead


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"alpha": -0.1}, "alpha"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, name):
    images, targets = _batch()
    args = {"num_classes": K, **kwargs}
    with pytest.raises(ValueError, match=name):
        mixup(images, targets, **args)


def test_soft_targets_are_rejected():
    images, targets = _batch()
    with pytest.raises(ValueError, match="targets"):
        mixup(images, torch.rand(8, K), K)
