"""Training and validation batches for ``timm_ext.train``: Fashion-MNIST in memory, or a torchvision ImageFolder.

Every random choice is a pure function of ``(seed, epoch)``: the sample order of an epoch is a permutation
drawn from a generator seeded with ``seed + epoch`` (as ``DistributedSampler``), and so are the flips. A run
resumed at batch ``k`` of an epoch therefore sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from plugins.data.fashion_mnist import CLASSES, FashionMNIST
from plugins.data.fashion_photos import FashionPhotos

__all__ = ["DataBundle", "DataError", "ImageFolderBatches", "TensorBatches", "build_data"]


class DataError(ValueError):
    """A dataset the command cannot use; the message names the flag and what to do."""


class TensorBatches:
    """Seeded, sharded batches over in-memory tensors.

    Args:
        images: float ``[N, C, H, W]``.
        labels: int64 ``[N]``.
        batch_size: images per batch on this process.
        seed: base seed; epoch ``e`` draws its order and flips from ``seed + e``.
        train: True shuffles, flips with probability ``hflip`` and drops the last incomplete batch; False keeps
            file order and every image.
        rank / world_size: this process's shard: it takes every ``world_size``-th item of the epoch order.
        hflip: probability of a horizontal flip per training image (default 0.0).
    """

    def __init__(self, images, labels, batch_size, seed=0, train=True, rank=0, world_size=1, hflip=0.0):
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.train = int(batch_size), int(seed), bool(train)
        self.rank, self.world_size, self.hflip = int(rank), int(world_size), float(hflip)
        per_rank = len(labels) // self.world_size if train else -(-len(labels) // self.world_size)
        self.num_batches = per_rank // self.batch_size if train else -(-per_rank // self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def _order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = len(self.labels)
        if not self.train:
            return torch.arange(n)[self.rank :: self.world_size], None
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(n, generator=generator)
        flips = torch.rand(n, generator=generator) < self.hflip if self.hflip > 0 else None
        keep = (n // self.world_size) * self.world_size
        order = order[:keep][self.rank :: self.world_size]
        return order, (flips[:keep][self.rank :: self.world_size] if flips is not None else None)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield batches ``start, start + 1, ...`` of ``epoch`` as ``(images, labels)``."""
        order, flips = self._order(epoch)
        for b in range(start, self.num_batches):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            images = self.images[index]
            if flips is not None:
                flip = flips[b * self.batch_size : (b + 1) * self.batch_size]
                images[flip] = images[flip].flip(-1)
            yield images, self.labels[index]


class ImageFolderBatches:
    """``torchvision.datasets.ImageFolder`` batches through a DataLoader, timm's transforms, sharded like
    :class:`TensorBatches` (``DistributedSampler`` seeded with ``seed``; ``set_epoch`` per epoch).

    Resuming at batch ``k`` of an epoch skips the first ``k`` batches of the same order; the random crops
    of the skipped and later batches come from the DataLoader workers and are not reproduced exactly.
    """

    def __init__(self, dataset, batch_size, seed=0, train=True, rank=0, world_size=1, workers=2):
        from torch.utils.data import DataLoader, DistributedSampler

        self.dataset, self.train = dataset, bool(train)
        self.sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed, drop_last=train
        )
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers, drop_last=train,
            persistent_workers=False, generator=torch.Generator().manual_seed(seed),
        )
        self.num_batches = len(self.loader)

    @property
    def num_images(self) -> int:
        return len(self.dataset)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(epoch)
        self.loader.generator.manual_seed(self.sampler.seed + epoch)
        for b, batch in enumerate(self.loader):
            if b >= start:
                yield batch


@dataclass
class DataBundle:
    """What the trainer needs from a dataset."""

    train: TensorBatches | ImageFolderBatches | None
    val: TensorBatches | ImageFolderBatches
    num_classes: int
    in_chans: int
    img_size: int


def _subset(n_total: int, limit: int) -> range | None:
    return range(min(limit, n_total)) if limit else None


def _fashion_mnist(args, rank, world_size, with_train) -> DataBundle:
    photos = args.dataset == "fashion_photos"
    in_chans, img_size = args.in_chans or (3 if photos else 1), args.img_size or (32 if photos else 28)
    flag = f"--dataset {args.dataset}"
    if photos and in_chans != 3:
        raise DataError(f"--in-chans {in_chans}: {flag} gives RGB images; accepted: 3")
    common = dict(seed=args.seed, rank=rank, world_size=world_size)

    def load(split: str, total: int, limit: int):
        if photos:  # rendered with seed 0 whatever --seed is: the data stay the same across training seeds
            return FashionPhotos(split, root=args.data_dir, img_size=img_size, indices=_subset(total, limit))
        return FashionMNIST(split, root=args.data_dir, img_size=img_size, in_chans=in_chans,
                            indices=_subset(total, limit))

    try:
        val = load("test", 10000, args.val_subset)
        train = load("train", 60000, args.train_subset) if with_train else None
    except FileNotFoundError as err:
        raise DataError(f"{flag}: {err}") from None
    except ValueError as err:
        raise DataError(f"{flag} (--data-dir, --img-size, --in-chans): {err}") from None
    train_batches = None
    if train is not None:
        train_batches = TensorBatches(*train.tensors(), args.batch_size * args.grad_accum_steps, train=True,
                                      hflip=args.hflip, **common)
    val_batches = TensorBatches(*val.tensors(), args.batch_size, train=False, **common)
    return DataBundle(train_batches, val_batches, len(CLASSES), in_chans, img_size)


def _image_folder(args, rank, world_size, with_train) -> DataBundle:
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    in_chans, img_size = args.in_chans or 3, args.img_size or 224
    if in_chans != 3:
        raise DataError(f"--in-chans {in_chans}: an ImageFolder dataset gives RGB images; accepted: 3")
    if not args.data_dir:
        raise DataError("--dataset imagefolder needs --data-dir DIR with DIR/train/<class>/* and DIR/val/<class>/*")
    splits = {}
    wanted = (("train", ("train",)), ("val", ("val", "validation"))) if with_train else (("val", ("val", "validation")),)
    for split, names in wanted:
        folders = [os.path.join(args.data_dir, name) for name in names if os.path.isdir(os.path.join(args.data_dir, name))]
        if not folders:
            raise DataError(f"--data-dir {args.data_dir!r}: no {split} folder (expected {' or '.join(names)}/)")
        transform = create_transform(img_size, is_training=split == "train", hflip=args.hflip)
        try:
            splits[split] = ImageFolder(folders[0], transform=transform)
        except (FileNotFoundError, RuntimeError) as err:
            raise DataError(f"--data-dir {args.data_dir!r}: {folders[0]} holds no usable images ({err})") from None
        limit = args.train_subset if split == "train" else args.val_subset
        if limit and limit < len(splits[split]):
            keep = torch.randperm(len(splits[split]), generator=torch.Generator().manual_seed(args.seed))[:limit]
            splits[split] = torch.utils.data.Subset(splits[split], sorted(keep.tolist()))
    first = next(iter(splits.values()))
    classes = len(first.classes if hasattr(first, "classes") else first.dataset.classes)
    common = dict(seed=args.seed, rank=rank, world_size=world_size, workers=args.workers)
    train = None
    if with_train:
        train = ImageFolderBatches(splits["train"], args.batch_size * args.grad_accum_steps, train=True, **common)
    val = ImageFolderBatches(splits["val"], args.batch_size, train=False, **common)
    return DataBundle(train, val, classes, in_chans, img_size)


def build_data(args, rank: int = 0, world_size: int = 1, with_train: bool = True) -> DataBundle:
    """Build the batches named by ``args.dataset`` (as resolved by ``timm_ext.train``).

    ``args`` needs ``dataset, data_dir, img_size, in_chans, batch_size, grad_accum_steps, train_subset,
    val_subset, hflip, seed, workers``. ``with_train=False`` builds only the validation batches.
    """
    build = _fashion_mnist if args.dataset in ("fashion_mnist", "fashion_photos") else _image_folder
    bundle = build(args, rank, world_size, with_train)
    if with_train and bundle.train.num_batches < 1:
        raise DataError(
            f"--batch-size {args.batch_size}: the training set has {bundle.train.num_images} images, fewer than one "
            f"update's worth ({args.batch_size} x {args.grad_accum_steps} accumulation x {world_size} processes)"
        )
    return bundle
