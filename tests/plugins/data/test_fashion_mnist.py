import gzip
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from plugins.data.fashion_mnist import CLASSES, ENV_VAR, MEAN, STD, FashionMNIST, load_fashion_mnist

# Pinned from the Debian package dataset-fashion-mnist (the original zalandoresearch files).
FIRST_LABELS = {"train": [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], "test": [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]}
FIRST_100_SHA256 = {"train": "9fd5e05238929f78618002dd971c29d7154e418c5e6c5159dcbc48bead93a90f",
                    "test": "d8c9b85550f6c8fa33478e27cb3fe70fd34b4cc96e6ab91b911853b51fb3d527"}


@pytest.mark.parametrize("split,count", [("train", 60000), ("test", 10000)])
def test_split_sizes_balance_and_range(split, count):
    images, labels = load_fashion_mnist(split)
    assert images.shape == (count, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (count,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == [count // 10] * 10, f"{split}: class balance"
    assert int(images.min()) == 0 and int(images.max()) == 255, f"{split}: value range"
    assert len(CLASSES) == 10 and CLASSES[0] == "T-shirt/top" and CLASSES[9] == "Ankle boot"


@pytest.mark.parametrize("split", ["train", "test"])
def test_order_is_file_order_and_stable(split):
    images, labels = load_fashion_mnist(split)
    assert labels[:10].tolist() == FIRST_LABELS[split]
    assert hashlib.sha256(images[:100].numpy().tobytes()).hexdigest() == FIRST_100_SHA256[split]
    images[:5] = 0  # a caller's in-place edit must not reach the per-process cache
    again, labels_again = load_fashion_mnist(split)
    assert hashlib.sha256(again[:100].numpy().tobytes()).hexdigest() == FIRST_100_SHA256[split]
    assert torch.equal(labels, labels_again)


def test_normalisation_constants_match_train_split():
    images, _ = load_fashion_mnist("train")
    x = images.numpy().astype(np.float64) / 255.0
    assert abs(x.mean() - MEAN) < 1e-6 and abs(x.std() - STD) < 1e-6, (x.mean(), x.std())


@pytest.mark.parametrize("img_size,in_chans,pad", [(28, 1, 0), (32, 3, 2), (64, 3, 0), (16, 1, 0)])
def test_dataset_shapes(img_size, in_chans, pad):
    ds = FashionMNIST("test", img_size=img_size, in_chans=in_chans, pad=pad, indices=range(8))
    image, label = ds[3]
    assert len(ds) == 8 and isinstance(label, int) and label == FIRST_LABELS["test"][3]
    assert image.shape == (in_chans, img_size, img_size) and image.dtype == torch.float32
    images, labels = ds.tensors()
    assert images.shape == (8, in_chans, img_size, img_size) and labels.tolist() == FIRST_LABELS["test"][:8]
    torch.testing.assert_close(images[3], image, rtol=0, atol=0, msg="tensors() and __getitem__ differ")
    if in_chans == 3:
        torch.testing.assert_close(image[0], image[2], rtol=0, atol=0, msg="channels not replicated")


def test_dataset_pixels_pad_resize_and_normalise():
    raw, _ = load_fashion_mnist("train")
    plain = FashionMNIST("train", normalize=False, indices=[0, 1])
    torch.testing.assert_close(plain[1][0][0], raw[1].float() / 255, rtol=0, atol=0, msg="plain pixels")
    normed = FashionMNIST("train", indices=[1])
    torch.testing.assert_close(normed[0][0][0], (raw[1].float() / 255 - MEAN) / STD, rtol=1e-6, atol=1e-6,
                               msg="normalisation")
    padded = FashionMNIST("train", pad=2, img_size=32, normalize=False, indices=[1])[0][0][0]
    torch.testing.assert_close(padded[2:30, 2:30], raw[1].float() / 255, rtol=0, atol=0, msg="pad keeps pixels")
    assert padded[:2].abs().sum() == 0 and padded[:, -2:].abs().sum() == 0, "pad is not zero"
    resized = FashionMNIST("train", img_size=56, normalize=False, indices=[1])[0][0][0]
    expected = F.interpolate(raw[1][None, None].float(), size=(56, 56), mode="bilinear", align_corners=False,
                             antialias=True)[0, 0] / 255
    torch.testing.assert_close(resized, expected, rtol=0, atol=0.5 / 255 + 1e-6, msg="bilinear resize")


def test_dataset_transform_and_bad_arguments():
    ds = FashionMNIST("test", indices=[0], transform=lambda x: x * 0)
    assert ds[0][0].abs().sum() == 0
    with pytest.raises(ValueError, match="in_chans"):
        FashionMNIST("test", in_chans=2)
    with pytest.raises(ValueError, match="split"):
        FashionMNIST("val")
    with pytest.raises(ValueError, match="indices"):
        FashionMNIST("test", indices=[10000])


def test_missing_dataset_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist("train")
    message = str(info.value)
    assert "make install" in message and "apt-get install dataset-fashion-mnist" in message and ENV_VAR in message


def _write_idx(path, magic, shape, payload):
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in shape)
    with gzip.open(path, "wb") as f:
        f.write(header + payload)


def test_corrupt_files_raise_value_error_naming_them(tmp_path):
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    _write_idx(labels, 2049, (2,), bytes([1, 2]))
    _write_idx(images, 2049, (2, 28, 28), bytes(2 * 28 * 28))  # label magic in an image file
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*magic"):
        load_fashion_mnist("test", root=tmp_path)
    _write_idx(images, 2051, (2, 28, 28), bytes(28 * 28))  # one image short
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*corrupt"):
        load_fashion_mnist("test", root=tmp_path)
    images.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_fashion_mnist("test", root=tmp_path)
    _write_idx(images, 2051, (2, 28, 28), bytes(2 * 28 * 28))  # failures are not cached: a fixed file loads
    x, y = load_fashion_mnist("test", root=tmp_path)
    assert x.shape == (2, 28, 28) and y.tolist() == [1, 2]
