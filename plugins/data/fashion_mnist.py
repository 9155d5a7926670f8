"""Fashion-MNIST (Xiao et al. 2017) from the Debian package ``dataset-fashion-mnist``, offline.

The package installs the original gzip'd IDX files under ``/usr/share/datasets/fashion-mnist``::

    {train,t10k}-images-idx3-ubyte.gz   uint8 [N, 28, 28], grey items on black
    {train,t10k}-labels-idx1-ubyte.gz   uint8 [N], class index 0..9 (see ``CLASSES``)

``FASHION_MNIST_DIR`` (or the ``root`` argument) points elsewhere. Splits are the official ones:
``"train"`` (60,000 items) and ``"test"`` (the t10k files, 10,000 items), both in file order.

Normalisation constants (``MEAN``, ``STD``) are the mean and standard deviation of every pixel of the
60,000 training images, scaled to [0, 1], computed once from the files (float64):
mean 0.2860406, std 0.3530242.
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["CLASSES", "MEAN", "STD", "DEFAULT_ROOT", "ENV_VAR", "FashionMNIST", "fashion_mnist_root",
           "load_fashion_mnist"]

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN = 0.2860406
STD = 0.3530242
DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "FASHION_MNIST_DIR"

_FILE_PREFIX = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC = 2051  # IDX: 0x0000 0x08 (uint8) 0x03 (three dimensions)
_LABELS_MAGIC = 2049  # IDX: 0x0000 0x08 (uint8) 0x01 (one dimension)


def fashion_mnist_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the IDX files: ``root`` if given, else ``$FASHION_MNIST_DIR``, else ``DEFAULT_ROOT``."""
    return Path(root if root is not None else os.environ.get(ENV_VAR, DEFAULT_ROOT))


def _check_split(split: str) -> str:
    if split not in _FILE_PREFIX:
        raise ValueError(f"split={split!r} is not supported; accepted values: {sorted(_FILE_PREFIX)}")
    return split


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse one gzip'd IDX file of unsigned bytes; ValueError naming the file if it is not one."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: not a readable gzip file ({err})") from err
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: IDX magic number {found} (expected {magic}); the file is corrupt or not "
                         f"a Fashion-MNIST {'image' if ndim == 3 else 'label'} file")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) + header_len
    if len(data) != expected:
        raise ValueError(f"{path}: {len(data)} bytes, but its header {shape} implies {expected}; the file is corrupt")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)


@functools.lru_cache(maxsize=4)
def _load_arrays(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = _FILE_PREFIX[split]
    image_path = root / f"{prefix}-images-idx3-ubyte.gz"
    label_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    for path in (image_path, label_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file {path} not found. Install the dataset with `make install` or "
                f"`apt-get install dataset-fashion-mnist`, or set {ENV_VAR} to a folder holding "
                f"{prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz")
    images = _read_idx(image_path, _IMAGES_MAGIC, 3)
    labels = _read_idx(label_path, _LABELS_MAGIC, 1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(f"{image_path}: images {images.shape} do not match labels {labels.shape} of "
                         f"{label_path} (expected [N, 28, 28] and [N])")
    if labels.max(initial=0) >= len(CLASSES):
        raise ValueError(f"{label_path}: label {int(labels.max())} outside 0..{len(CLASSES) - 1}")
    return images, labels


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)`` of one split in file order.

    Args:
        split: ``"train"`` (60,000 items) or ``"test"`` (10,000 items). Default ``"train"``.
        root: folder of the IDX files; default ``$FASHION_MNIST_DIR`` or ``DEFAULT_ROOT``.

    Returns:
        uint8 tensor ``[N, 28, 28]`` and int64 tensor ``[N]`` (class indices into ``CLASSES``), fresh copies
        of arrays decoded once per process.

    Raises:
        FileNotFoundError: the files are missing (the message says how to install them).
        ValueError: a file is corrupt (the message names it).
    """
    images, labels = _load_arrays(fashion_mnist_root(root).resolve(), _check_split(split))
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


class FashionMNIST(Dataset):
    """Fashion-MNIST as a map-style dataset of ``(float image [C, H, W], int label)``.

    Pixels are scaled to [0, 1], zero-padded by ``pad`` on each side, resized (bilinear) to
    ``img_size`` x ``img_size``, replicated to ``in_chans`` channels and, if ``normalize``, standardised with
    ``MEAN`` and ``STD``. Padding and resizing run once, eagerly, on the whole split (kept as uint8), so
    ``__getitem__`` only converts one image.

    Args:
        split: ``"train"`` or ``"test"``. Default ``"train"``.
        root: folder of the IDX files; default ``$FASHION_MNIST_DIR`` or ``DEFAULT_ROOT``.
        img_size: output side in pixels. Default 28.
        in_chans: 1 or 3 (grey replicated). Default 1.
        pad: zero pixels added on each side before resizing. Default 0.
        normalize: subtract ``MEAN`` and divide by ``STD``. Default True.
        indices: optional subset (and order) of item indices into the split. Default None (all, file order).
        transform: optional callable applied to the image tensor in ``__getitem__``. Default None.
    """

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None, img_size: int = 28,
                 in_chans: int = 1, pad: int = 0, normalize: bool = True, indices: Sequence[int] | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans={in_chans!r} is not supported; accepted values: 1 or 3")
        if not isinstance(img_size, int) or img_size < 1:
            raise ValueError(f"img_size={img_size!r} must be a positive int")
        if not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad={pad!r} must be a non-negative int")
        images, labels = load_fashion_mnist(split, root)
        if indices is not None:
            index = torch.as_tensor(list(indices), dtype=torch.int64)
            if index.numel() and (index.min() < 0 or index.max() >= labels.numel()):
                raise ValueError(f"indices must lie in 0..{labels.numel() - 1} for split={split!r}")
            images, labels = images[index], labels[index]
        self.split = split
        self.img_size = img_size
        self.in_chans = in_chans
        self.pad = pad
        self.normalize = normalize
        self.transform = transform
        self.labels = labels
        self.images = _pad_resize(images, pad, img_size)  # uint8 [N, H, W]

    def __len__(self) -> int:
        return self.labels.numel()

    def _to_float(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(-3).float().div_(255.0)
        if self.normalize:
            x = x.sub_(MEAN).div_(STD)
        return x.expand(*x.shape[:-3], self.in_chans, *x.shape[-2:])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self._to_float(self.images[index]).contiguous()
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All items at once: float ``[N, C, H, W]`` (as ``__getitem__``, without ``transform``) and int64 ``[N]``.

        For ``in_chans=3`` the image tensor is an expanded view of one channel (no copy); indexing a batch
        out of it gives an ordinary contiguous tensor.
        """
        return self._to_float(self.images), self.labels.clone()


def _pad_resize(images: torch.Tensor, pad: int, img_size: int, chunk: int = 10000) -> torch.Tensor:
    """Zero-pad uint8 ``[N, 28, 28]`` by ``pad`` and resize to ``img_size`` (bilinear, antialiased, rounded)."""
    if pad:
        images = F.pad(images, (pad, pad, pad, pad))
    if images.shape[-1] == img_size:
        return images.contiguous()
    out = torch.empty(images.shape[0], img_size, img_size, dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].unsqueeze(1).float()
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=True)
        out[start:start + chunk] = x.squeeze(1).round_().clamp_(0, 255).to(torch.uint8)
    return out
