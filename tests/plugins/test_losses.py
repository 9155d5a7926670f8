import pytest
import torch
import torch.nn.functional as F

from plugins.tricks.distillation import DistillationLoss, distillation_loss
from plugins.tricks.label_smoothing import (
    LabelSmoothingCrossEntropy,
    _composite_smoothing,
    check_loss_args,
    label_smoothing_cross_entropy,
    soft_target_cross_entropy,
)

K = 5
IGNORE = 255


def _data(shape=(6,), num_classes=K, dtype=torch.float64, seed=0, ignore=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], num_classes, *shape[1:], generator=g, dtype=dtype) * 2
    target = torch.randint(0, num_classes, shape, generator=g)
    if ignore:
        target.view(-1)[::4] = IGNORE
    weight = torch.rand(num_classes, generator=g, dtype=dtype) + 0.5
    return logits, target, weight


def _by_hand(logits, target, on, off, weight, reduction):
    """sum_c w_c q_c (-log p_c) per sample; mean divides by the kept samples' target weights (torch's rule)."""
    num_classes = logits.shape[1]
    logp = logits.log_softmax(1).movedim(1, -1).reshape(-1, num_classes)
    flat = target.reshape(-1)
    keep = flat != IGNORE
    q = torch.full_like(logp, off)
    q[keep, flat[keep]] = on
    w = torch.ones(num_classes, dtype=logits.dtype) if weight is None else weight
    per = -(q * w * logp).sum(1) * keep
    if reduction == "none":
        return per.reshape(target.shape)
    if reduction == "sum":
        return per.sum()
    return per.sum() / w[flat[keep]].sum()


SHAPES = [(6,), (3, 4, 5)]  # (N, K) and (N, K, H, W) logits


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "4d"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_weight", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_form_is_torch_label_smoothing(shape, reduction, use_weight, dtype):
    logits, target, weight = _data(shape, dtype=dtype)
    weight = weight if use_weight else None
    got = label_smoothing_cross_entropy(logits, target, 0.1, "uniform", IGNORE, reduction, weight)
    expected = F.cross_entropy(
        logits, target, weight=weight, ignore_index=IGNORE, reduction=reduction, label_smoothing=0.1
    )
    torch.testing.assert_close(
        got, expected, rtol=1e-6, atol=1e-6, msg=f"{shape} {reduction} weight={use_weight}"
    )


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "4d"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_weight", [False, True], ids=["noweight", "weight"])
def test_paper_form_by_hand(shape, reduction, use_weight):
    logits, target, weight = _data(shape)
    weight = weight if use_weight else None
    eps = 0.2
    got = label_smoothing_cross_entropy(logits, target, eps, "paper", IGNORE, reduction, weight)
    expected = _by_hand(logits, target, 1 - eps, eps / (K - 1), weight, reduction)
    torch.testing.assert_close(
        got, expected, rtol=1e-10, atol=1e-10, msg=f"{shape} {reduction} weight={use_weight}"
    )


def test_paper_form_hand_example_k3():
    # K = 3, eps = 0.3: q = (0.7, 0.15, 0.15); loss = -sum q log p
    logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    logp = logits.log_softmax(1)[0]
    expected = -(0.7 * logp[0] + 0.15 * logp[1] + 0.15 * logp[2])
    got = label_smoothing_cross_entropy(logits, torch.tensor([0]), 0.3, "paper")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_paper_form_beyond_torch_range_uses_the_written_out_formula():
    # K = 2, eps = 0.7: the equivalent uniform eps' = 1.4 > 1, which torch refuses.
    logits, target, weight = _data((8,), num_classes=2)
    for reduction in ("mean", "sum", "none"):
        got = label_smoothing_cross_entropy(logits, target, 0.7, "paper", IGNORE, reduction, weight)
        expected = _by_hand(logits, target, 0.3, 0.7, weight, reduction)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10, msg=reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_written_out_formula_matches_torch_where_both_apply(reduction):
    logits, target, weight = _data((3, 2, 2))
    got = _composite_smoothing(logits, target, 0.4, IGNORE, reduction, weight)
    expected = F.cross_entropy(
        logits, target, weight, ignore_index=IGNORE, reduction=reduction, label_smoothing=0.4
    )
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_module_matches_function_and_mmseg_style_ignore():
    logits, target, weight = _data((2, 3, 3))
    module = LabelSmoothingCrossEntropy(0.1, "paper", ignore_index=IGNORE, weight=weight)
    expected = label_smoothing_cross_entropy(logits, target, 0.1, "paper", IGNORE, "mean", weight)
    torch.testing.assert_close(module(logits, target), expected, rtol=0, atol=0)
    assert "weight" not in module.state_dict()


@pytest.mark.parametrize("form", ["paper", "uniform"])
@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "4d"])
def test_gradcheck_label_smoothing(form, shape):
    logits, target, weight = _data(shape, seed=1)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: label_smoothing_cross_entropy(x, target, 0.1, form, IGNORE, "mean", weight), (logits,)
    )


@pytest.mark.parametrize("shape", [(6, K), (2, K, 3, 2)], ids=["2d", "4d"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_soft_target_cross_entropy_matches_torch(shape, reduction):
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(shape, generator=g) * 4).requires_grad_(True)
    soft = torch.softmax(torch.randn(shape, generator=g), dim=1)
    ours = soft_target_cross_entropy(logits, soft, reduction)
    ref_logits = logits.detach().clone().requires_grad_(True)
    ref = F.cross_entropy(ref_logits, soft, reduction=reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6, msg=f"value {shape} {reduction}")
    upstream = torch.rand_like(ours)
    (ours * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(
        logits.grad, ref_logits.grad, rtol=1e-5, atol=1e-7, msg=f"grad {shape} {reduction}"
    )


def test_soft_target_cross_entropy_extreme_logits_and_gradcheck():
    # same numbers as torch even where a probability underflows
    logits = torch.tensor([[500.0, -500.0, 0.0], [0.0, 1e-3, -2e3]], dtype=torch.float64)
    soft = torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, soft), F.cross_entropy(logits, soft), rtol=1e-12, atol=0
    )
    for reduction in ("mean", "none"):
        x = torch.randn(3, K, 2, dtype=torch.float64, requires_grad=True)
        q = torch.softmax(torch.randn(3, K, 2, dtype=torch.float64), 1)
        assert torch.autograd.gradcheck(lambda x, q=q, r=reduction: soft_target_cross_entropy(x, q, r), (x,))


def _distillation_by_hand(z, r, target, temperature, on=1.0, off=0.0):
    if target.is_floating_point():
        q = target
    else:
        q = torch.full_like(z, off)
        q[torch.arange(len(target)), target] = on
    hard = -(q * z.log_softmax(1)).sum(1).mean()
    teacher = torch.softmax(r / temperature, 1)
    soft = -(teacher * (z / temperature).log_softmax(1)).sum(1).mean()
    return hard + temperature**2 * soft


@pytest.mark.parametrize(
    ("kind", "epsilon", "form", "on", "off"),
    [
        ("hard", 0.0, "paper", 1.0, 0.0),
        ("hard", 0.1, "paper", 0.9, 0.1 / (K - 1)),
        ("hard", 0.1, "uniform", 0.9 + 0.1 / K, 0.1 / K),
        ("soft", 0.0, "paper", None, None),
    ],
)
@pytest.mark.parametrize("temperature", [1.0, 20.0])
def test_distillation_matches_the_formula(kind, epsilon, form, on, off, temperature):
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(7, K, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    r = (torch.randn(7, K, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    if kind == "hard":
        target = torch.randint(0, K, (7,), generator=g)
    else:
        target = torch.softmax(torch.randn(7, K, generator=g, dtype=torch.float64), 1)
    got = distillation_loss(z, r, target, temperature, epsilon, form)
    z_ref = z.detach().clone().requires_grad_(True)
    expected = _distillation_by_hand(z_ref, r.detach(), target, temperature, on, off)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10, msg="loss")
    got.backward()
    expected.backward()
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-10, atol=1e-12, msg="student gradient")
    assert r.grad is None, "no gradient may reach the teacher"
    assert torch.autograd.gradcheck(
        lambda x: distillation_loss(x, r, target, temperature, epsilon, form), (z,)
    )


def test_distillation_float32_extreme_logits_and_module():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(16, 1000, generator=g) * 60
    r = torch.randn(16, 1000, generator=g) * 60
    y = torch.randint(0, 1000, (16,), generator=g)
    got = DistillationLoss(temperature=20.0)(z, r, y)
    expected = _distillation_by_hand(z.double(), r.double(), y, 20.0)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-4)


def test_low_precision_logits_keep_their_dtype():
    z = torch.randn(4, K, dtype=torch.bfloat16, requires_grad=True)
    loss = distillation_loss(z, torch.randn(4, K), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert loss.dtype == torch.bfloat16 and z.grad.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda x, y: label_smoothing_cross_entropy(x, y, epsilon=1.0), "epsilon"),
        (lambda x, y: label_smoothing_cross_entropy(x, y, epsilon=-0.1), "epsilon"),
        (lambda x, y: label_smoothing_cross_entropy(x, y, form="gluon"), "form"),
        (lambda x, y: label_smoothing_cross_entropy(x, y, reduction="avg"), "reduction"),
        (lambda x, y: LabelSmoothingCrossEntropy(epsilon=2.0), "epsilon"),
        (lambda x, y: soft_target_cross_entropy(x, y), "soft_targets"),
        (lambda x, y: distillation_loss(x, x, y, temperature=0.0), "temperature"),
        (lambda x, y: distillation_loss(x, x[:2], y), "teacher_logits"),
        (lambda x, y: distillation_loss(x, x, torch.softmax(x, 1), epsilon=0.1), "epsilon"),
        (lambda x, y: DistillationLoss(temperature=-1), "temperature"),
        (lambda x, y: check_loss_args(epsilon=1.0), "epsilon"),
        (lambda x, y: check_loss_args(form="gluon"), "form"),
        (lambda x, y: check_loss_args(temperature=float("nan")), "temperature"),
    ],
)
def test_invalid_arguments_name_the_argument(call, name):
    logits, target, _ = _data(ignore=False)
    with pytest.raises(ValueError, match=name):
        call(logits, target)


def test_check_loss_args_accepts_what_the_losses_accept():
    logits, target, _ = _data(ignore=False)
    for eps, form, temperature in [(0.0, "paper", None), (0.1, "uniform", 1.0), (0.999, "paper", 20)]:
        check_loss_args(eps, form, temperature)  # no error, and the losses agree
        label_smoothing_cross_entropy(logits, target, eps, form)
        distillation_loss(logits, logits, target, temperature or 20.0, eps, form)


def test_uniform_epsilon_gives_the_paper_targets():
    from plugins.tricks.label_smoothing import uniform_epsilon

    for k, eps in [(2, 0.1), (10, 0.1), (1000, 0.3)]:
        e = uniform_epsilon(eps, k, "paper")
        assert abs((1 - e + e / k) - (1 - eps)) < 1e-12 and abs(e / k - eps / (k - 1)) < 1e-12, (k, eps)
    assert uniform_epsilon(0.1, 10, "uniform") == 0.1
    with pytest.raises(ValueError, match="form"):
        uniform_epsilon(0.1, 10, "gaussian")
