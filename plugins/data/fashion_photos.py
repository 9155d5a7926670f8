"""Fashion photos: Fashion-MNIST classification in the fashion scenes' domain (tinted items on photo crops).

The fashion scenes (:mod:`plugins.data.scenes`) paste colour-tinted Fashion-MNIST items onto crops of
scikit-image photos. A backbone pre-trained on plain Fashion-MNIST (grey items on black) meets that domain
only in the detector, as an ImageNet backbone would meet cartoons. This set keeps Fashion-MNIST's task (one
item, its class) in the scenes' domain, the way ImageNet and VOC share photographs: each image is one item
rendered exactly as a scene renders it (``compose_scene``: the same tint, the same alpha edge) on a random
crop of the same photos, at a random scale, aspect, mirror and place.

Splits never share pixels with each other, as the scenes' do: ``"train"`` uses Fashion-MNIST train items and
the left 70 % of each photo, ``"test"`` the t10k items and the right 30 %. Item ``i`` of a split depends
only on ``(seed, split, i, img_size)`` (one generator per item, seeded with ``SeedSequence``), so a subset,
a rerun and another process give the same pixels; rendered items are cached on disk (``$BOT_DATA_CACHE``, default
``~/.cache/bag-of-tricks/data``) so that a study renders them once. Images are RGB, normalised with ``MEAN`` / ``STD``
(the ImageNet statistics timm and torchvision use, which the transfer configs' pixel mean and std repeat).
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .fashion_mnist import load_fashion_mnist
from .scenes import ITEM_ASPECT, compose_scene, photo_regions

__all__ = ["ITEM_SCALE", "MEAN", "STD", "FashionPhotos", "render_items"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
ITEM_SCALE = (0.6, 1.0)  # sqrt(item h * item w) / image side: the item fills most of the image, as a class crop
_SPLITS = {"train": ("train", 0), "test": ("val", 1)}  # Fashion-MNIST split -> (photo region, seed stream id)
_SEED_STREAM = 7  # keeps these generators apart from the scenes' (which use streams 0 and 1)


def _render_one(rng: np.random.Generator, item: np.ndarray, category: int, regions: list[np.ndarray],
                size: int) -> np.ndarray:
    region = regions[rng.integers(len(regions))]
    side_max = min(region.shape[0], region.shape[1])
    side = int(rng.integers(min(size, side_max), min(side_max, 4 * size) + 1))
    y = int(rng.integers(region.shape[0] - side + 1))
    x = int(rng.integers(region.shape[1] - side + 1))
    background = np.asarray(Image.fromarray(region[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR))
    scale = rng.uniform(*ITEM_SCALE) * size
    aspect = np.sqrt(np.exp(rng.uniform(np.log(ITEM_ASPECT[0]), np.log(ITEM_ASPECT[1]))))
    h = int(np.clip(np.rint(scale * aspect), 4, size))
    w = int(np.clip(np.rint(scale / aspect), 4, size))
    patch = np.asarray(Image.fromarray(item).resize((w, h), Image.BILINEAR))
    if rng.random() < 0.5:
        patch = np.ascontiguousarray(patch[:, ::-1])
    px, py = int(rng.integers(size - w + 1)), int(rng.integers(size - h + 1))
    color = tuple(255.0 * c for c in colorsys.hsv_to_rgb(*rng.uniform((0.0, 0.5, 0.6), (1.0, 1.0, 1.0))))
    return compose_scene(background, [patch], [category + 1], [(px, py)], [color], min_visible_area=0).image


def render_items(split: str, indices: Sequence[int], img_size: int, seed: int = 0,
                 root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render Fashion-MNIST items ``indices`` of ``split`` on photo crops.

    Returns:
        uint8 ``[N, img_size, img_size, 3]`` images and int64 ``[N]`` labels (Fashion-MNIST's).
    """
    if split not in _SPLITS:
        raise ValueError(f"split={split!r} is not supported; accepted values: {sorted(_SPLITS)}")
    region_split, stream = _SPLITS[split]
    items, labels = (t.numpy() for t in load_fashion_mnist(split, root))
    regions = photo_regions()[region_split]
    out = np.empty((len(indices), img_size, img_size, 3), dtype=np.uint8)
    for k, index in enumerate(indices):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SEED_STREAM, stream, int(index), img_size]))
        out[k] = _render_one(rng, items[index], int(labels[index]), regions, img_size)
    return out, labels[np.asarray(indices, dtype=np.int64)].astype(np.int64)


FORMAT = "bag-of-tricks/fashion-photos/v1"  # bump whenever the same arguments would render other pixels
CACHE_ENV_VAR = "BOT_DATA_CACHE"


def _cache_file(split: str, img_size: int, seed: int) -> Path:
    root = Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "bag-of-tricks" / "data")
    tag = hashlib.sha256(FORMAT.encode()).hexdigest()[:8]
    return root / f"fashion-photos-{split}-{img_size}px-seed{seed}-{tag}.npz"


@functools.lru_cache(maxsize=4)
def _cached(split: str, indices: tuple[int, ...], img_size: int, seed: int, root: str | None):
    """Items ``indices``, from the on-disk cache of items ``0..K-1`` when it covers them (rendered once per machine,
    written atomically; a cache that cannot be read or written is skipped: the pixels do not depend on it)."""
    if root is not None:  # other IDX files: nothing to share
        return render_items(split, indices, img_size, seed, root)
    path, need = _cache_file(split, img_size, seed), (max(indices) + 1 if indices else 0)
    try:
        with np.load(path) as f:
            images, labels = f["images"], f["labels"]
    except (OSError, ValueError, KeyError):
        images = labels = None
    if images is None or len(images) < need:
        images, labels = render_items(split, range(need), img_size, seed)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.savez(f, images=images, labels=labels)
            os.replace(tmp, path)
        except OSError:
            pass
    index = np.asarray(indices, dtype=np.int64)
    return images[index], labels[index]


class FashionPhotos(Dataset):
    """The rendered items as a map-style dataset of ``(float image [3, H, W], int label)``.

    Args:
        split: ``"train"`` (60,000 items) or ``"test"`` (10,000). Default ``"train"``.
        root: folder of the Fashion-MNIST IDX files; default ``$FASHION_MNIST_DIR`` or the Debian package's.
        img_size: image side in pixels, >= 8. Default 32.
        indices: optional subset of item indices (default all, in file order).
        seed: rendering seed (backgrounds, tints, placement). Default 0.
    """

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None, img_size: int = 32,
                 indices: Sequence[int] | None = None, seed: int = 0):
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 8:
            raise ValueError(f"img_size={img_size!r} must be an int >= 8")
        total = 60000 if split == "train" else 10000
        index = tuple(range(total)) if indices is None else tuple(int(i) for i in indices)
        if index and (min(index) < 0 or max(index) >= total):
            raise ValueError(f"indices must lie in 0..{total - 1} for split={split!r}")
        images, labels = _cached(split, index, img_size, int(seed), None if root is None else str(root))
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2)  # uint8 [N, 3, H, W] view
        self.labels = torch.from_numpy(labels)
        self.img_size, self.in_chans = img_size, 3

    def __len__(self) -> int:
        return self.labels.numel()

    @staticmethod
    def _to_float(images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return images.float().div_(255.0).sub_(mean).div_(std)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._to_float(self.images[index]), int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All items at once: float ``[N, 3, H, W]`` and int64 ``[N]``."""
        return self._to_float(self.images), self.labels.clone()
