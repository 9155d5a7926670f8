"""Data of timm's run that the extension adds: the built-in real data (offline) and an order that resumes exactly.

- :func:`built_in_dataset`: ``--dataset fashion_mnist`` / ``fashion_photos`` as a timm dataset of PIL images,
  so that they go through timm's loaders, transforms and prefetcher exactly as an ImageFolder would.
- :class:`InMemoryLoader`: the same built-in data as normalised tensors in memory, used when the training
  transforms come down to horizontal flips (``--scale 1 1 --ratio 1 1 --color-jitter 0`` and no other
  augmentation, or ``--no-aug``): no PIL round trip, no workers, the speed of the data held as tensors.
- :class:`ResumableSampler` and :class:`SeededItems`: timm's map-style datasets in an order that is a function
  of ``(seed, epoch)``, started at any batch, each item's transform seeded by ``(seed, epoch, item)``, so that a
  run resumed from a recovery checkpoint sees the batches an uninterrupted run would have seen.

Every order is drawn as the paper's pipeline draws it: epoch ``e`` permutes the items with a generator seeded
``seed + e`` (as ``DistributedSampler``), each process taking every ``world_size``-th item.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from plugins.data import fashion_mnist, fashion_photos

__all__ = ["BUILT_IN", "BuiltInImages", "InMemoryLoader", "ResumableSampler", "SeededItems", "built_in_dataset",
           "built_in_defaults", "flips_only", "in_memory_tensors"]

BUILT_IN = ("fashion_mnist", "fashion_photos")
_SIZE = {"fashion_mnist": 28, "fashion_photos": 32}
_CHANS = {"fashion_mnist": 1, "fashion_photos": 3}
_STATS = {"fashion_mnist": ((fashion_mnist.MEAN,), (fashion_mnist.STD,)),
          "fashion_photos": (tuple(fashion_photos.MEAN), tuple(fashion_photos.STD))}


class BuiltInImages(Dataset):
    """``(PIL image, label)`` over uint8 images ``[N, H, W]`` (grey) or ``[N, 3, H, W]`` (RGB), converted to
    ``mode`` (timm's ``--input-img-mode``: "L" or "RGB"; None keeps the stored mode)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None, mode: str | None = None):
        self.images, self.labels, self.transform, self.mode = images, labels, transform, mode
        self.target_transform = None

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, index: int):
        img = self.images[index]
        pil = Image.fromarray(img.numpy(), "L") if img.ndim == 2 else Image.fromarray(img.permute(1, 2, 0).numpy())
        if self.mode and pil.mode != self.mode:
            pil = pil.convert(self.mode)
        if self.transform is not None:
            pil = self.transform(pil)
        return pil, int(self.labels[index])


def _indices(split: str, limit: int) -> range | None:
    total = 60000 if split == "train" else 10000
    return range(min(limit, total)) if limit else None


def built_in_dataset(name: str, split: str, root=None, img_size: int | None = None, limit: int = 0,
                     mode: str | None = None) -> BuiltInImages:
    """One split (``train`` / ``test``) of a built-in dataset; ``limit`` keeps the first N items (0: all); the
    images are given in PIL ``mode`` (None: as stored)."""
    indices = _indices(split, limit)
    if name == "fashion_mnist":
        images, labels = fashion_mnist.load_fashion_mnist(split, root)
        if indices is not None:
            images, labels = images[: len(indices)], labels[: len(indices)]
        return BuiltInImages(images, labels, mode=mode)
    photos = fashion_photos.FashionPhotos(split, root=root, img_size=img_size or _SIZE[name], indices=indices)
    return BuiltInImages(photos.images, photos.labels, mode=mode)


def in_memory_tensors(name: str, split: str, root, img_size: int, in_chans: int, limit: int = 0):
    """Normalised float images ``[N, C, H, W]`` and int64 labels of a built-in split, as the datasets give them."""
    indices = _indices(split, limit)
    if name == "fashion_mnist":
        return fashion_mnist.FashionMNIST(split, root=root, img_size=img_size, in_chans=in_chans,
                                          indices=indices).tensors()
    return fashion_photos.FashionPhotos(split, root=root, img_size=img_size, indices=indices).tensors()


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


def flips_only(args) -> bool:
    """Whether timm's training transforms for ``args`` come down to a horizontal flip of the stored image.

    True for ``--no-aug``, and for a full-image crop (``--scale 1 1 --ratio 1 1``) without colour jitter,
    auto-augment, random erasing, vertical flips, grey/blur, aug splits/repeats or variable image sizes.
    """
    if args.train_img_sizes is not None or args.naflex_loader or args.aug_splits or args.aug_repeats:
        return False
    if args.epoch_repeats or args.input_size is not None and args.input_size[-1] != args.img_size:
        return False
    if args.no_aug:
        return True
    return (list(args.scale) == [1.0, 1.0] and list(args.ratio) == [1.0, 1.0] and not args.color_jitter
            and not args.aa and not args.reprob and not args.vflip and not args.grayscale_prob
            and not args.gaussian_blur_prob and args.train_crop_mode in (None, "rrc"))


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1, drop_last: bool = True,
                hflip: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This process's item order of ``epoch`` and its flips: a permutation seeded ``seed + epoch``."""
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator)
    flips = torch.rand(n, generator=generator) < hflip if hflip > 0 else None
    keep = (n // world_size) * world_size if drop_last else n
    order = order[:keep][rank::world_size]
    return order, (flips[:keep][rank::world_size] if flips is not None else None)


class InMemoryLoader:
    """Batches of in-memory normalised images, seeded and sharded; a drop-in for timm's loader in timm's loop.

    Args:
        images / labels: float ``[N, C, H, W]`` and int64 ``[N]``.
        batch_size: images per batch on this process.
        seed: epoch ``e`` draws its order and flips from ``seed + e``.
        train: True shuffles, flips with probability ``hflip`` and drops the last incomplete batch; False keeps
            the stored order and every image.
        rank / world_size: this process's shard.
        device: where the batches go.

    ``set_epoch(e)`` chooses the epoch, ``start_batch`` (0 unless resuming) the first batch it yields.
    """

    def __init__(self, images, labels, batch_size, seed=0, train=True, rank=0, world_size=1, hflip=0.0,
                 device=torch.device("cpu"), dtype=torch.float32):
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.train = int(batch_size), int(seed), bool(train)
        self.rank, self.world_size, self.hflip = int(rank), int(world_size), float(hflip)
        self.device, self.dtype = device, dtype
        self.epoch, self.start_batch = 0, 0
        self.mixup_enabled = False
        per_rank = len(labels) // self.world_size if train else -(-len(labels) // self.world_size)
        self.num_batches = per_rank // self.batch_size if train else -(-per_rank // self.batch_size)
        self.dataset = self  # timm's loop reads loader.dataset for set_epoch

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        n = len(self.labels)
        if self.train:
            order, flips = epoch_order(n, self.seed, self.epoch, self.rank, self.world_size, True, self.hflip)
        else:
            order, flips = torch.arange(n)[self.rank::self.world_size], None
        start, self.start_batch = self.start_batch, 0
        for b in range(start, self.num_batches):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            images = self.images[index]
            if flips is not None:
                flip = flips[b * self.batch_size:(b + 1) * self.batch_size]
                images[flip] = images[flip].flip(-1)
            yield (images.to(self.device, self.dtype, non_blocking=True),
                   self.labels[index].to(self.device, non_blocking=True))


class ResumableSampler(Sampler[int]):
    """Item keys of an epoch in the order of :func:`epoch_order`, from batch ``start_batch`` on.

    Each key is ``epoch * len(dataset) + index``; :class:`SeededItems` turns it back into the item and seeds
    the item's transform from it. ``set_epoch`` as ``DistributedSampler``.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True):
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.rank, self.world_size, self.drop_last = int(rank), int(world_size), bool(drop_last)
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> torch.Tensor:
        return epoch_order(self.num_items, self.seed, self.epoch, self.rank, self.world_size, self.drop_last)[0]

    def __len__(self) -> int:
        """The whole epoch's items, whatever ``start_batch`` is: timm's loop counts the epoch's batches from
        ``len(loader)`` and numbers a resumed epoch's batches from ``start_batch``."""
        return len(self._order())

    def __iter__(self):
        order = self._order()[self.start_batch * self.batch_size:]
        self.start_batch = 0
        base = self.epoch * self.num_items
        return iter((base + order).tolist())


def _item_seed(seed: int, key: int) -> int:
    return (seed * 1_000_003 + key) % (2**32)


class SeededItems(Dataset):
    """A map-style dataset whose item ``epoch * N + i`` is item ``i`` with its transform's randomness (Python's,
    NumPy's and torch's global streams, in whichever process loads it) seeded from ``(seed, epoch, i)``."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):  # transform, parser, ... as the wrapped dataset's (timm sets .transform)
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __setattr__(self, name, value):
        if name in ("dataset", "seed"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.dataset, name, value)

    def __getitem__(self, key: int):
        s = _item_seed(self.seed, int(key))
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        return self.dataset[int(key) % len(self.dataset)]
