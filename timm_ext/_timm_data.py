"""The built-in real data (offline) as timm datasets, so that ``--dataset fashion_mnist`` goes through timm's
loaders, transforms and prefetcher exactly as an ImageFolder would.

Items are PIL images at their stored size (Fashion-MNIST: 28 px grey; fashion photos: items rendered on photo
crops, RGB, at ``--img-size``), labels are ints; timm's ``create_loader`` sets the ``transform``.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch.utils.data import Dataset

from plugins.data import fashion_mnist, fashion_photos

__all__ = ["BUILT_IN", "BuiltInImages", "built_in_dataset", "built_in_defaults"]

BUILT_IN = ("fashion_mnist", "fashion_photos")
_SIZE = {"fashion_mnist": 28, "fashion_photos": 32}
_CHANS = {"fashion_mnist": 1, "fashion_photos": 3}
_STATS = {"fashion_mnist": ((fashion_mnist.MEAN,), (fashion_mnist.STD,)),
          "fashion_photos": (tuple(fashion_photos.MEAN), tuple(fashion_photos.STD))}


class BuiltInImages(Dataset):
    """``(PIL image, label)`` over uint8 images ``[N, H, W]`` (grey) or ``[N, 3, H, W]`` (RGB)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        self.images, self.labels, self.transform = images, labels, transform
        self.target_transform = None

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, index: int):
        img = self.images[index]
        pil = Image.fromarray(img.numpy(), "L") if img.ndim == 2 else Image.fromarray(img.permute(1, 2, 0).numpy())
        if self.transform is not None:
            pil = self.transform(pil)
        return pil, int(self.labels[index])


def built_in_dataset(name: str, split: str, root=None, img_size: int | None = None, limit: int = 0) -> BuiltInImages:
    """One split (``train`` / ``test``) of a built-in dataset; ``limit`` keeps the first N items (0: all)."""
    total = 60000 if split == "train" else 10000
    indices = range(min(limit, total)) if limit else None
    if name == "fashion_mnist":
        images, labels = fashion_mnist.load_fashion_mnist(split, root)
        if indices is not None:
            images, labels = images[: len(indices)], labels[: len(indices)]
        return BuiltInImages(images, labels)
    photos = fashion_photos.FashionPhotos(split, root=root, img_size=img_size or _SIZE[name], indices=indices)
    return BuiltInImages(photos.images, photos.labels)


def built_in_defaults(args, given: set[str]) -> None:
    """Fill what the built-in data decides when the command line leaves it to the model: classes, size,
    channels, mean/std and a full-image validation crop."""
    name = args.dataset
    if "num_classes" not in given:
        args.num_classes = len(fashion_mnist.CLASSES)
    if "img_size" not in given and "input_size" not in given:
        args.img_size = _SIZE[name]
    if "in_chans" not in given and "input_size" not in given:
        args.in_chans = _CHANS[name]
    if "mean" not in given and "std" not in given:
        args.mean, args.std = list(_STATS[name][0]), list(_STATS[name][1])
    if "crop_pct" not in given:
        args.crop_pct = 1.0
