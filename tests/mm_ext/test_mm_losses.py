"""LabelSmoothingCrossEntropyLoss against mmdet's and mmseg's CrossEntropyLoss, by hand, and inside their heads."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import warnings

import pytest

pytest.importorskip("mmengine")
mmdet_losses = pytest.importorskip("mmdet.models.losses")
mmseg_losses = pytest.importorskip("mmseg.models.losses")

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS, DefaultScope
from mmengine.structures import PixelData

import mm_ext
from plugins.tricks.distillation import distillation_loss

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
        return mmdet_losses.CrossEntropyLoss(use_sigmoid=False, **kwargs)


def _mmseg_ce(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mmseg_losses.CrossEntropyLoss(use_sigmoid=False, **kwargs)


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


@pytest.mark.parametrize(
    "case, loss_kwargs, call_kwargs",
    [
        ("plain mean", {}, {}),
        ("label weights + avg_factor (box head call)", {}, dict(weight="w", avg_factor=10.0)),
        ("reduction_override none", {}, dict(weight="w", reduction_override="none")),
        ("reduction_override sum", {}, dict(reduction_override="sum")),
        (
            "class_weight + loss_weight",
            dict(class_weight=[1.0, 2.0, 0.5, 1.0, 3.0, 0.2], loss_weight=2.0),
            {},
        ),
        ("ignore_index + avg_non_ignore", dict(ignore_index=2, avg_non_ignore=True), {}),
        ("ignore_index at call time", {}, dict(ignore_index=5)),
    ],
)
def test_equals_mmdet_cross_entropy_at_epsilon_zero(case, loss_kwargs, call_kwargs):
    logits, labels, weights = _roi_batch()
    call_kwargs = {k: (weights if v == "w" else v) for k, v in call_kwargs.items()}
    ours = _ours("mmdet", epsilon=0.0, **loss_kwargs)  # the scope picks mmdet's class_weight rule
    _assert_same(ours, _mmdet_ce(**loss_kwargs), logits, case, labels, **call_kwargs)


@pytest.mark.parametrize(
    "case, loss_kwargs, call_kwargs",
    [
        ("decode head call, ignore 255", {}, dict(ignore_index=255)),
        ("avg_non_ignore", dict(avg_non_ignore=True), dict(ignore_index=255)),
        (
            "pixel weights (OHEM sampler) + loss_weight",
            dict(loss_weight=0.4),
            dict(weight="w", ignore_index=255),
        ),
        ("avg_factor", {}, dict(avg_factor=17.0, ignore_index=255)),
        ("reduction_override none", {}, dict(reduction_override="none", ignore_index=255)),
    ],
)
def test_equals_mmseg_cross_entropy_at_epsilon_zero(case, loss_kwargs, call_kwargs):
    logits, labels = _pixel_batch()
    pixel_weights = torch.rand(labels.shape, generator=torch.Generator().manual_seed(3))
    call_kwargs = {k: (pixel_weights if v == "w" else v) for k, v in call_kwargs.items()}
    ours = _ours("mmseg", epsilon=0.0, **loss_kwargs)
    assert ours.loss_name == _mmseg_ce().loss_name == "loss_ce"
    _assert_same(ours, _mmseg_ce(**loss_kwargs), logits, case, labels, **call_kwargs)


def _by_hand(logits, labels, epsilon, form, ignore_index):
    """Per-element -sum_c q_c log p_c with q built explicitly (0 for ignored elements)."""
    num_classes = logits.shape[1]
    logp = F.log_softmax(logits.double(), dim=1).movedim(1, -1).reshape(-1, num_classes)
    flat = labels.reshape(-1)
    losses = []
    for row, label in zip(logp, flat.tolist()):
        if label == ignore_index:
            losses.append(torch.zeros((), dtype=torch.float64))
            continue
        if form == "paper":
            q = torch.full((num_classes,), epsilon / (num_classes - 1), dtype=torch.float64)
            q[label] = 1 - epsilon
        else:
            q = torch.full((num_classes,), epsilon / num_classes, dtype=torch.float64)
            q[label] += 1 - epsilon
        losses.append(-(q * row).sum())
    return torch.stack(losses).reshape(labels.shape)


@pytest.mark.parametrize("form", ["paper", "uniform"])
def test_smoothing_by_hand_in_box_head_with_background(form):
    logits, labels, weights = _roi_batch()
    loss = mm_ext.LabelSmoothingCrossEntropyLoss(epsilon=0.1, form=form)
    value = loss(logits, labels, weights, avg_factor=10.0)
    expected = (_by_hand(logits, labels, 0.1, form, -100) * weights.double()).sum() / 10.0
    torch.testing.assert_close(
        value.double(), expected, **TOL, msg=f"{form} form, K + 1 classes, avg_factor 10"
    )
    plain = _mmdet_ce()(logits, labels, weights, avg_factor=10.0)
    assert value > plain, "smoothing adds the cross entropy against the other classes"


@pytest.mark.parametrize("form", ["paper", "uniform"])
def test_smoothing_by_hand_on_pixels_with_ignore_index(form):
    logits, labels = _pixel_batch()
    loss = mm_ext.LabelSmoothingCrossEntropyLoss(epsilon=0.1, form=form)
    per_pixel = loss(logits, labels, ignore_index=255, reduction_override="none")
    expected = _by_hand(logits, labels, 0.1, form, 255)
    torch.testing.assert_close(per_pixel.double(), expected, **TOL, msg=f"{form} form, per pixel")
    assert (per_pixel[labels == 255] == 0).all(), "ignored pixels contribute nothing"
    mean = loss(logits, labels, ignore_index=255)
    torch.testing.assert_close(mean.double(), expected.mean(), **TOL, msg=f"{form}: mean over all pixels")


def test_built_into_mmdet_bbox_head():
    mmdet_registry = pytest.importorskip("mmdet.registry")
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)

    def head(loss_cls):
        torch.manual_seed(0)
        with DefaultScope.overwrite_default_scope("mmdet"):  # earlier Runner tests leave another scope set
            return mmdet_registry.MODELS.build(
                dict(
                    type="Shared2FCBBoxHead",
                    in_channels=8,
                    fc_out_channels=16,
                    roi_feat_size=2,
                    num_classes=5,
                    bbox_coder=dict(
                        type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]
                    ),
                    loss_cls=loss_cls,
                    loss_bbox=dict(type="L1Loss", loss_weight=1.0),
                )
            )

    logits, labels, weights = _roi_batch()
    rois = torch.cat([torch.zeros(12, 1), torch.rand(12, 2) * 10, torch.rand(12, 2) * 10 + 10], dim=1)
    args = (logits, torch.zeros(12, 20), rois, labels, weights, torch.zeros(12, 4), torch.zeros(12, 4))
    reference = head(dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)).loss(*args)
    at_zero = head(dict(type="LabelSmoothingCrossEntropyLoss", epsilon=0.0)).loss(*args)
    smoothed = head(dict(type="LabelSmoothingCrossEntropyLoss", epsilon=0.1)).loss(*args)
    torch.testing.assert_close(at_zero["loss_cls"], reference["loss_cls"], **TOL, msg="bbox head, epsilon 0")
    avg_factor = float((weights > 0).sum())
    expected = (_by_hand(logits, labels, 0.1, "paper", -100) * weights.double()).sum() / avg_factor
    torch.testing.assert_close(smoothed["loss_cls"].double(), expected, **TOL, msg="bbox head, epsilon 0.1")


def test_built_into_mmseg_decode_head():
    mmseg_registry = pytest.importorskip("mmseg.registry")
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    logits, labels = _pixel_batch()
    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)

    def losses(loss_decode):
        with DefaultScope.overwrite_default_scope("mmseg"):
            head = mmseg_registry.MODELS.build(
                dict(
                    type="FCNHead",
                    in_channels=4,
                    channels=4,
                    num_convs=1,
                    num_classes=4,
                    loss_decode=loss_decode,
                )
            )
        return head.loss_by_feat(logits, samples)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = losses(dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
    at_zero = losses(dict(type="LabelSmoothingCrossEntropyLoss", epsilon=0.0))
    smoothed = losses(
        dict(type="LabelSmoothingCrossEntropyLoss", epsilon=0.1, form="uniform", loss_name="loss_ls")
    )
    torch.testing.assert_close(at_zero["loss_ce"], reference["loss_ce"], **TOL, msg="decode head, epsilon 0")
    expected = _by_hand(logits, labels, 0.1, "uniform", 255).mean()
    torch.testing.assert_close(smoothed["loss_ls"].double(), expected, **TOL, msg="decode head, epsilon 0.1")


def test_registered_and_validated():
    assert MODELS.get("LabelSmoothingCrossEntropyLoss") is mm_ext.LabelSmoothingCrossEntropyLoss
    assert MODELS.get("KnowledgeDistillationLoss") is mm_ext.KnowledgeDistillationLoss
    with pytest.raises(ValueError, match="epsilon"):
        mm_ext.LabelSmoothingCrossEntropyLoss(epsilon=1.0)
    with pytest.raises(ValueError, match="form"):
        mm_ext.LabelSmoothingCrossEntropyLoss(form="gluon")
    with pytest.raises(ValueError, match="class_weight"):
        mm_ext.LabelSmoothingCrossEntropyLoss(class_weight="weights.txt")
    with pytest.raises(ValueError, match="reduction_override"):
        mm_ext.LabelSmoothingCrossEntropyLoss()(*_roi_batch()[:2], reduction_override="avg")
    with pytest.raises(TypeError, match="unexpected"):
        mm_ext.LabelSmoothingCrossEntropyLoss()(*_roi_batch()[:2], typo_argument=1)


def test_knowledge_distillation_loss():
    g = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    labels = torch.randint(0, 5, (6,), generator=g)
    loss = mm_ext.KnowledgeDistillationLoss(temperature=4.0, loss_weight=0.5)
    student, teacher = student.requires_grad_(True), teacher.requires_grad_(True)
    value = loss(student, labels, teacher_score=teacher, avg_factor=6)
    torch.testing.assert_close(
        value, 0.5 * distillation_loss(student, teacher, labels, 4.0), **TOL, msg="kd value"
    )
    value.backward()
    assert teacher.grad is None and student.grad is not None, "only the student gets a gradient"
    with pytest.raises(ValueError, match="teacher_score"):
        loss(student, labels)
    with pytest.raises(ValueError, match="avg_factor"):
        loss(student, labels, teacher_score=teacher, avg_factor=3)
    for bad, name in [
        (dict(temperature=0.0), "temperature"),
        (dict(epsilon=-0.1), "epsilon"),
        (dict(form="x"), "form"),
    ]:
        with pytest.raises(ValueError, match=name):
            mm_ext.KnowledgeDistillationLoss(**bad)
