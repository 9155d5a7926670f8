"""The same batch of images and boxes, mixed by MMDetection's DetectionMixupHook path and by Detectron2's
d2_ext.build_train_loader path with the same seed and iteration, gives the same mixed images, boxes, labels and
box weights (both call plugins.tricks.detection_mixup)."""

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("detectron2")

import torch  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.structures.bbox import HorizontalBoxes  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

from d2_ext.det_mixup import mix_d2_batch  # noqa: E402
from mm_ext.det_mixup import mix_det_batch  # noqa: E402
from plugins.tricks.detection_mixup import ratio_generator  # noqa: E402


def _pairs(generator, sizes=((40, 56), (48, 32), (30, 30), (24, 60))):
    out = []
    for h, w in sizes:
        count = int(torch.randint(1, 5, (1,), generator=generator))
        xy = torch.rand(count, 2, generator=generator) * torch.tensor([w - 10, h - 10])
        boxes = torch.cat([xy, xy + 1 + torch.rand(count, 2, generator=generator) * 9], dim=1)
        labels = torch.randint(0, 10, (count,), generator=generator)
        out.append((torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8), boxes, labels))
    return out


def test_both_frameworks_mix_a_batch_identically():
    samples = _pairs(torch.Generator().manual_seed(0))
    mm_batch = dict(inputs=[image for image, _, _ in samples], data_samples=[])
    d2_batch = []
    for image, boxes, labels in samples:
        sample = DetDataSample(metainfo=dict(img_shape=tuple(image.shape[1:])))
        sample.gt_instances = InstanceData(bboxes=HorizontalBoxes(boxes.clone()), labels=labels.clone())
        mm_batch["data_samples"].append(sample)
        instances = Instances(tuple(image.shape[1:]))
        instances.gt_boxes, instances.gt_classes = Boxes(boxes.clone()), labels.clone()
        d2_batch.append({"image": image, "instances": instances})

    ratios = mix_det_batch(mm_batch, 1.5, ratio_generator(7, 11))
    d2_mixed = mix_d2_batch(d2_batch, 1.5, ratio_generator(7, 11))
    assert all(r is not None and 0 < r < 1 for r in ratios) and len(set(ratios)) == 4
    for i, (mm_sample, d2_dict) in enumerate(zip(mm_batch["data_samples"], d2_mixed)):
        gt, inst = mm_sample.gt_instances, d2_dict["instances"]
        torch.testing.assert_close(mm_batch["inputs"][i], d2_dict["image"], rtol=0, atol=0, msg=f"image {i}")
        torch.testing.assert_close(gt.bboxes.tensor, inst.gt_boxes.tensor, rtol=0, atol=0, msg=f"boxes {i}")
        torch.testing.assert_close(gt.labels, inst.gt_classes, rtol=0, atol=0, msg=f"labels {i}")
        torch.testing.assert_close(gt.mix_weights, inst.gt_mix_weights, rtol=0, atol=0, msg=f"weights {i}")
        own = len(samples[i][1])
        expected = torch.tensor([ratios[i]] * own + [1 - ratios[i]] * (len(gt.labels) - own))
        torch.testing.assert_close(gt.mix_weights, expected, rtol=0, atol=1e-7, msg=f"r / 1 - r on image {i}")
        assert mm_sample.img_shape == inst.image_size == tuple(d2_dict["image"].shape[1:])
