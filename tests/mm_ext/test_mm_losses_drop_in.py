"""LabelSmoothingCrossEntropyLoss as a drop-in by type: every argument of mmdet's and mmseg's CrossEntropyLoss,
with their meaning (compared with their loss at epsilon 0), and one message naming the key for a bad value."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import inspect
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("mmengine")
mmdet_losses = pytest.importorskip("mmdet.models.losses")
mmseg_losses = pytest.importorskip("mmseg.models.losses")

import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope

import mm_ext

TOL = dict(rtol=1e-5, atol=1e-6)


def _values_and_grads(loss_fn, logits, *args, **kwargs):
    logits = logits.detach().clone().requires_grad_(True)
    value = loss_fn(logits, *args, **kwargs)
    value.sum().backward()
    return value.detach(), logits.grad


def _assert_same(ours, theirs, logits, case, *args, **kwargs):
    value, grad = _values_and_grads(ours, logits, *args, **kwargs)
    ref_value, ref_grad = _values_and_grads(theirs, logits, *args, **kwargs)
    torch.testing.assert_close(value, ref_value, **TOL, msg=lambda m: f"{case}: loss value: {m}")
    torch.testing.assert_close(grad, ref_grad, **TOL, msg=lambda m: f"{case}: gradient: {m}")


def _mmdet_ce(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mmdet warns about avg_non_ignore defaults
        return mmdet_losses.CrossEntropyLoss(**{"use_sigmoid": False, **kwargs})


def _mmseg_ce(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mmseg_losses.CrossEntropyLoss(**{"use_sigmoid": False, **kwargs})


def _ours(scope, **kwargs):
    """Our loss built in a default scope, as a Runner of an mmdet / mmseg config builds it."""
    with DefaultScope.overwrite_default_scope(scope):
        return mm_ext.LabelSmoothingCrossEntropyLoss(**kwargs)


def _roi_batch(num_rois=12, num_classes=5, seed=0):
    """Box-head style batch: K + 1 logits, labels in 0..K (K = background), per-RoI label weights."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_rois, num_classes + 1, generator=g) * 3
    labels = torch.randint(0, num_classes + 1, (num_rois,), generator=g)
    labels[:4] = num_classes  # several background RoIs
    weights = torch.ones(num_rois)
    weights[-2:] = 0.0  # RoIs left out by the sampler
    return logits, labels, weights


def _pixel_batch(num_classes=4, seed=1):
    """Decode-head style batch: (N, K, H, W) logits, labels with 255 = ignore."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, num_classes, 5, 6, generator=g) * 2
    labels = torch.randint(0, num_classes, (2, 5, 6), generator=g)
    labels[0, :2] = 255
    labels[1, -1, :] = 255
    return logits, labels


@pytest.mark.parametrize("framework", [mmdet_losses, mmseg_losses], ids=["mmdet", "mmseg"])
def test_takes_every_argument_of_the_frameworks_cross_entropy(framework):
    """A type-only swap keeps the replaced loss's arguments in the merged config dict."""
    theirs = inspect.signature(framework.CrossEntropyLoss.__init__).parameters
    ours = inspect.signature(mm_ext.LabelSmoothingCrossEntropyLoss.__init__).parameters
    assert set(theirs) - {"self"} <= set(ours), sorted(set(theirs) - set(ours))
    stock = {name: p.default for name, p in theirs.items() if name != "self"}  # every default spelled out
    loss = mm_ext.LabelSmoothingCrossEntropyLoss(epsilon=0.1, **stock)
    assert loss.use_sigmoid is False and loss.use_mask is False and loss.loss_name == "loss_ce"


@pytest.mark.parametrize("key", ["use_sigmoid", "use_mask"])
def test_sigmoid_and_mask_forms_are_refused_by_name(key):
    with pytest.raises(
        ValueError,
        match=rf"{key}=True is not accepted \(accepted: False\): label smoothing here is "
        r"for softmax heads",
    ):
        mm_ext.LabelSmoothingCrossEntropyLoss(**{key: True})


@pytest.mark.parametrize(
    "case, loss_kwargs, call_kwargs",
    [
        (
            "class_weight + avg_non_ignore + ignore_index",
            dict(class_weight=[1, 2, 0.5, 1, 3, 0.2], avg_non_ignore=True, ignore_index=5),
            {},
        ),
        (
            "class_weight + label weights + avg_factor",
            dict(class_weight=[1, 2, 0.5, 1, 3, 0.2]),
            dict(weight="w", avg_factor=7.0),
        ),
        ("reduction sum + loss_weight", dict(reduction="sum", loss_weight=0.5), dict(weight="w")),
        (
            "every stock argument",
            dict(
                use_sigmoid=False,
                use_mask=False,
                reduction="mean",
                class_weight=None,
                ignore_index=None,
                loss_weight=1.0,
                avg_non_ignore=False,
            ),
            {},
        ),
    ],
)
def test_inherited_arguments_equal_mmdet_in_the_mmdet_scope(case, loss_kwargs, call_kwargs):
    logits, labels, weights = _roi_batch()
    call_kwargs = {k: (weights if v == "w" else v) for k, v in call_kwargs.items()}
    _assert_same(
        _ours("mmdet", epsilon=0.0, **loss_kwargs),
        _mmdet_ce(**loss_kwargs),
        logits,
        case,
        labels,
        **call_kwargs,
    )


def _unignored_pixels(num_classes=4, seed=2):
    """MMSegmentation's class-weighted mean indexes the class weights with every label, so no 255 here."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, num_classes, 5, 6, generator=g) * 2, torch.randint(
        0, num_classes, (2, 5, 6), generator=g
    )


@pytest.mark.parametrize(
    "case, loss_kwargs, call_kwargs",
    [
        ("class_weight: mean over the labels' class weights", dict(class_weight=[0.5, 2.0, 1.0, 3.0]), {}),
        ("class_weight + avg_non_ignore", dict(class_weight=[0.5, 2.0, 1.0, 3.0], avg_non_ignore=True), {}),
        (
            "class_weight + pixel weights + loss_weight",
            dict(class_weight=[0.5, 2.0, 1.0, 3.0], loss_weight=0.4),
            dict(weight="w"),
        ),
        ("class_weight + avg_factor", dict(class_weight=[0.5, 2.0, 1.0, 3.0]), dict(avg_factor=9.0)),
        ("reduction sum", dict(reduction="sum", class_weight=[0.5, 2.0, 1.0, 3.0]), {}),
        (
            "every stock argument",
            dict(
                use_sigmoid=False,
                use_mask=False,
                reduction="mean",
                class_weight=None,
                loss_weight=1.0,
                loss_name="loss_ce",
                avg_non_ignore=False,
            ),
            {},
        ),
    ],
)
def test_inherited_arguments_equal_mmseg_in_the_mmseg_scope(case, loss_kwargs, call_kwargs):
    logits, labels = _unignored_pixels()
    pixel_weights = torch.rand(labels.shape, generator=torch.Generator().manual_seed(5))
    call_kwargs = {k: (pixel_weights if v == "w" else v) for k, v in call_kwargs.items()}
    ours = _ours("mmseg", epsilon=0.0, **loss_kwargs)
    _assert_same(ours, _mmseg_ce(**loss_kwargs), logits, case, labels, ignore_index=255, **call_kwargs)


def test_mmseg_class_weight_with_ignored_pixels_is_torchs_weighted_mean():
    """Where mmseg's own loss cannot index its class weights with 255, avg_non_ignore gives torch's mean."""
    logits, labels = _pixel_batch()
    class_weight = [0.5, 2.0, 1.0, 3.0]
    ours = _ours("mmseg", epsilon=0.0, class_weight=class_weight, avg_non_ignore=True)
    reference = F.cross_entropy(logits, labels, weight=torch.tensor(class_weight), ignore_index=255)
    torch.testing.assert_close(ours(logits, labels, ignore_index=255), reference, **TOL)
    # avg_non_ignore=False counts every ignored pixel with weight 1 in the divisor
    ours = _ours("mmseg", epsilon=0.0, class_weight=class_weight)
    ignored = int((labels == 255).sum())
    expected = reference * (
        torch.tensor(class_weight)[labels[labels != 255]].sum()
        / (torch.tensor(class_weight)[labels[labels != 255]].sum() + ignored)
    )
    torch.testing.assert_close(ours(logits, labels, ignore_index=255), expected, **TOL)


def test_class_weight_rule_follows_the_scope_unless_given():
    logits, labels = _unignored_pixels()
    class_weight = [0.5, 2.0, 1.0, 3.0]
    seg, det = (
        _mmseg_ce(class_weight=class_weight)(logits, labels),
        _mmdet_ce(class_weight=class_weight)(logits, labels),
    )
    assert not torch.allclose(seg, det), "the two frameworks divide a class-weighted mean differently"
    for scope, avg_class_weight, reference in [
        ("mmseg", None, seg),
        ("mmdet", None, det),
        ("mmdet", True, seg),
        ("mmseg", False, det),
    ]:
        ours = _ours(scope, epsilon=0.0, class_weight=class_weight, avg_class_weight=avg_class_weight)
        torch.testing.assert_close(ours(logits, labels), reference, **TOL, msg=f"{scope}, {avg_class_weight}")


@pytest.mark.parametrize("suffix", [".npy", ".json"])
def test_class_weight_from_a_file_as_mmseg_reads_it(tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".npy":
        np.save(path, np.array([0.5, 2.0, 1.0, 3.0]))
    else:
        path.write_text(json.dumps([0.5, 2.0, 1.0, 3.0]))
    logits, labels = _unignored_pixels()
    ours = _ours("mmseg", epsilon=0.0, class_weight=str(path))
    assert ours.class_weight == [0.5, 2.0, 1.0, 3.0]
    _assert_same(ours, _mmseg_ce(class_weight=str(path)), logits, suffix, labels)
    path.with_suffix(".txt").write_text("0.5 2.0")
    with pytest.raises(
        ValueError, match=r"class_weight=.*weights\.txt.*unknown file type; accepted: None, a list"
    ):
        mm_ext.LabelSmoothingCrossEntropyLoss(class_weight=str(path.with_suffix(".txt")))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(loss_weight="1.0"), "loss_weight must be a number, got '1.0'"),
        (dict(avg_non_ignore="yes"), "avg_non_ignore must be True or False, got 'yes'"),
        (dict(avg_class_weight=1), "avg_class_weight must be True, False or None, got 1"),
        (dict(class_weight=[1.0, "2"]), "class_weight=[1.0, '2']; accepted"),
        (dict(reduction="avg"), "reduction must be one of"),
    ],
)
def test_bad_values_name_the_key(kwargs, needle):
    with pytest.raises(ValueError) as error:
        mm_ext.LabelSmoothingCrossEntropyLoss(**kwargs)
    assert needle in str(error.value)
