import numpy as np
import pytest
import torch

import plugins.data.fashion_photos as photos_module
from plugins.data.fashion_mnist import load_fashion_mnist
from plugins.data.fashion_photos import MEAN, STD, FashionPhotos, render_items


@pytest.fixture(autouse=True)
def _data(fashion_mnist):
    return fashion_mnist


def test_labels_are_fashion_mnist_labels_and_images_rgb():
    data = FashionPhotos("test", img_size=24, indices=[5, 0, 9])
    _, labels = load_fashion_mnist("test")
    assert data.labels.tolist() == labels[[5, 0, 9]].tolist()
    x, y = data.tensors()
    assert x.shape == (3, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    image, label = data[1]
    assert label == int(labels[0])
    raw = data.images[1].float() / 255.0
    expected = (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(image, expected)


def test_an_item_renders_the_same_in_any_subset_and_process_order():
    a, _ = render_items("train", [3, 10, 7], img_size=32)
    b, _ = render_items("train", [7, 3], img_size=32)
    np.testing.assert_array_equal(a[0], b[1])
    np.testing.assert_array_equal(a[2], b[0])
    c, _ = render_items("train", [3], img_size=32, seed=1)
    assert not np.array_equal(a[0], c[0]), "the seed must change the rendering"


def test_the_item_is_tinted_and_the_background_is_a_photo():
    images, _ = render_items("train", range(16), img_size=32)
    channel_spread = np.abs(images[..., 0].astype(int) - images[..., 2].astype(int)).mean()
    assert channel_spread > 10, "items and backgrounds are colour, not grey"
    corners = images[:, :2, :2].reshape(16, -1).std(axis=1)
    assert (corners > 0).any(), "a background is a photo crop, not flat black"


def test_each_split_draws_backgrounds_from_its_own_photo_columns(monkeypatch):
    flat = {"train": [np.full((100, 100, 3), 10, np.uint8)], "val": [np.full((100, 100, 3), 200, np.uint8)]}
    monkeypatch.setattr(photos_module, "photo_regions", lambda: flat)
    for split, value in (("train", 10), ("test", 200)):
        images, _ = render_items(split, range(4), img_size=32)
        items, _ = load_fashion_mnist(split)
        # at least one corner pixel of each image shows the background (an item never fills all four corners)
        corners = images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
        assert ((corners == value).all(axis=-1)).any(axis=1).all(), f"{split}: background from the wrong photos"


@pytest.mark.parametrize("kwargs,match", [
    (dict(img_size=4), r"img_size=4 must be an int >= 8"),
    (dict(indices=[60000]), r"indices must lie in 0..59999 for split='train'"),
])
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FashionPhotos("train", **kwargs)


def test_unknown_split_is_named():
    with pytest.raises(ValueError, match=r"split='val' is not supported; accepted values: \['test', 'train'\]"):
        render_items("val", [0], img_size=16)


def test_the_disk_cache_gives_the_rendered_pixels(tmp_path, monkeypatch):
    monkeypatch.setenv(photos_module.CACHE_ENV_VAR, str(tmp_path))
    photos_module._cached.cache_clear()
    first = FashionPhotos("test", img_size=16, indices=[2, 1]).images.clone()
    assert len(list(tmp_path.glob("fashion-photos-test-16px-*.npz"))) == 1
    photos_module._cached.cache_clear()
    again = FashionPhotos("test", img_size=16, indices=[1, 2, 4]).images  # grows the cache to item 4
    fresh, _ = render_items("test", [1, 2, 4], img_size=16)
    np.testing.assert_array_equal(again.permute(0, 2, 3, 1).numpy(), fresh)
    torch.testing.assert_close(again[[1, 0]], first)
