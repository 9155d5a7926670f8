"""Fashion scenes: a detection / segmentation set composed from real pixels, exact by construction.

Each scene is a crop of a bundled public-domain photo from scikit-image (``PHOTOS``) with 1..6 Fashion-MNIST
items pasted on top at random scale (20-60 % of the image side), aspect (3:4 to 4:3), mirror and place, each
tinted with a random saturated colour; later items cover earlier ones.

Splits never share pixels: ``train`` scenes use Fashion-MNIST train items and crops from the left 70 % of
each photo's columns, ``val`` scenes use t10k items and the right 30 %.

Masks follow the item's intensity ``v`` (after resizing; items lie on black): ``v >= 40`` is opaque item
(alpha 1, foreground), ``v <= 10`` is transparent, and in between the item is alpha-blended (alpha rising
linearly from 0 to 1) and the pixel is labelled 255 (ignore). A later item's blended or opaque pixels remove
those pixels from every earlier item. An item's instance mask is its opaque pixels still visible at the end;
an item with fewer than ``min_visible_area`` such pixels (default 16; 0 for a fully hidden item) is dropped
and its remaining pixels become 255 in the label map, so every labelled pixel belongs to exactly one
instance. Boxes are tight around the instance mask in whole pixels: COCO ``[x, y, w, h]`` with
``w = x_max - x_min + 1`` (``pycocotools.mask.toBbox`` gives the same box); ``area`` is the mask's pixel count.

On disk (``python -m plugins.data.scenes --out DIR ...``, see docs/architecture.md)::

    DIR/annotations/instances_{train,val}.json  COCO; category ids 1..10 in Fashion-MNIST order; masks as
                                                compressed RLE; extra keys: image "split", annotation
                                                "source_index" / "source_split" (the Fashion-MNIST item)
    DIR/{train,val}/images/NNNNNN.png           RGB; image id = NNNNNN + 1
    DIR/{train,val}/labels/NNNNNN.png           uint8 'L': 0 background, 1..10 classes, 255 ignore
    DIR/preview.png                             some scenes of each split with boxes and class names
    DIR/manifest.json                           arguments + format version; written last

The same arguments give byte-identical files (one ``numpy`` generator per scene, seeded with
``SeedSequence([seed, split_id, index])``); a folder whose manifest matches is reused without work.
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ._coco import mask_to_xywh, numbered_png_folder, rle_encode, write_json
from .fashion_mnist import CLASSES, load_fashion_mnist

__all__ = ["FORMAT", "IGNORE_INDEX", "PHOTOS", "SPLITS", "Scene", "SceneInstance", "compose_scene", "photo_regions",
           "generate_scenes", "main"]

FORMAT = "bag-of-tricks/fashion-scenes/v1"  # bump whenever the same arguments would give other files
IGNORE_INDEX = 255
FG_THRESHOLD = 40  # item intensity (0..255) at and above which a pixel is opaque foreground
BG_THRESHOLD = 10  # item intensity at and below which a pixel is transparent background
PHOTOS = ("brick", "grass", "gravel", "camera", "coffee", "chelsea", "astronaut", "rocket")
TRAIN_COLUMNS = 0.7  # train crops come from the left 70 % of each photo, val crops from the rest
CROP_SIDE = (64, 160)  # square crop side in photo pixels, capped by the region, then resized to the image
ITEM_SCALE = (0.2, 0.6)  # sqrt(item h * item w) / image side
ITEM_ASPECT = (0.75, 4 / 3)  # item h / w, log-uniform
SPLITS = {"train": ("train", 0), "val": ("test", 1)}  # scene split -> (Fashion-MNIST split, seed stream id)
PREVIEW_SCENES = 8  # per split


@dataclass(frozen=True)
class SceneInstance:
    """One visible item: ``item`` indexes the items given to ``compose_scene``; ``mask`` is bool [H, W]."""

    item: int
    category_id: int
    mask: np.ndarray
    bbox: list[int]
    area: int


@dataclass(frozen=True)
class Scene:
    """``image`` uint8 [H, W, 3], ``label`` uint8 [H, W] (0, 1..10, 255) and the visible instances."""

    image: np.ndarray
    label: np.ndarray
    instances: list[SceneInstance]


def compose_scene(background: np.ndarray, items: Sequence[np.ndarray], category_ids: Sequence[int],
                  positions: Sequence[tuple[int, int]], colors: Sequence[tuple[float, float, float]],
                  min_visible_area: int = 16) -> Scene:
    """Paste grey ``items`` (uint8 [h, w], on black) in order onto ``background`` (uint8 [H, W, 3]).

    Args:
        background: uint8 RGB image [H, W, 3].
        items: uint8 grey patches, already at their final size; each must lie inside the image.
        category_ids: class of each item, 1..10.
        positions: top-left ``(x, y)`` of each item in image pixels.
        colors: RGB tint of each item, 0..255; an item pixel of intensity v shows ``color * (0.3 + 0.7 v/255)``.
        min_visible_area: items with fewer visible opaque pixels are dropped (see module docstring). Default 16.

    Returns:
        the composed ``Scene``; instances in paste order.
    """
    if background.ndim != 3 or background.shape[2] != 3 or background.dtype != np.uint8:
        raise ValueError(f"background must be uint8 [H, W, 3], got {background.dtype} {background.shape}")
    if not len(items) == len(category_ids) == len(positions) == len(colors):
        raise ValueError(f"items, category_ids, positions and colors differ in length: {len(items)}, "
                         f"{len(category_ids)}, {len(positions)}, {len(colors)}")
    height, width = background.shape[:2]
    image = background.astype(np.float32)
    label = np.zeros((height, width), dtype=np.uint8)
    owner = np.full((height, width), -1, dtype=np.int32)
    for k, (item, category_id, (x0, y0), color) in enumerate(zip(items, category_ids, positions, colors)):
        if not 1 <= category_id <= len(CLASSES):
            raise ValueError(f"category_ids[{k}]={category_id!r}; accepted values: 1..{len(CLASSES)}")
        h, w = item.shape
        if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
            raise ValueError(f"items[{k}] of size {w}x{h} at position {(x0, y0)} leaves the {width}x{height} image")
        v = item.astype(np.float32)
        alpha = np.clip((v - BG_THRESHOLD) / (FG_THRESHOLD - BG_THRESHOLD), 0.0, 1.0)[..., None]
        tinted = np.asarray(color, dtype=np.float32) * (0.3 + 0.7 * v / 255.0)[..., None]
        window = image[y0:y0 + h, x0:x0 + w]
        window += alpha * (tinted - window)
        foreground = item >= FG_THRESHOLD
        border = (item > BG_THRESHOLD) & ~foreground
        label_window, owner_window = label[y0:y0 + h, x0:x0 + w], owner[y0:y0 + h, x0:x0 + w]
        label_window[border], owner_window[border] = IGNORE_INDEX, -1
        label_window[foreground], owner_window[foreground] = category_id, k
    areas = np.bincount(owner.ravel() + 1, minlength=len(items) + 1)[1:]
    instances = []
    for k, area in enumerate(areas.tolist()):
        if area == 0:
            continue
        mask = owner == k
        if area < min_visible_area:
            label[mask] = IGNORE_INDEX
            continue
        instances.append(SceneInstance(k, int(category_ids[k]), mask, mask_to_xywh(mask), area))
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Scene(pixels, label, instances)


@functools.lru_cache(maxsize=1)
def photo_regions() -> dict[str, list[np.ndarray]]:
    """RGB uint8 regions of the bundled photos per split (left ``TRAIN_COLUMNS`` for train, the rest for val)."""
    import skimage.data  # deferred: only scene generation needs scikit-image

    regions: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        cut = round(photo.shape[1] * TRAIN_COLUMNS)
        regions["train"].append(np.ascontiguousarray(photo[:, :cut, :3]))
        regions["val"].append(np.ascontiguousarray(photo[:, cut:, :3]))
    return regions


def _sample_scene(rng: np.random.Generator, pool: np.ndarray, pool_labels: np.ndarray,
                  regions: list[np.ndarray], image_size: int, items_min: int, items_max: int
                  ) -> tuple[Scene, np.ndarray]:
    """Draw one scene; returns it and the Fashion-MNIST index of every pasted item."""
    region = regions[rng.integers(len(regions))]
    side_max = min(region.shape[0], region.shape[1], CROP_SIDE[1])
    side = int(rng.integers(min(CROP_SIDE[0], side_max), side_max + 1))
    y = int(rng.integers(region.shape[0] - side + 1))
    x = int(rng.integers(region.shape[1] - side + 1))
    background = np.asarray(Image.fromarray(region[y:y + side, x:x + side])
                            .resize((image_size, image_size), Image.BILINEAR))
    if rng.random() < 0.5:
        background = np.ascontiguousarray(background[:, ::-1])

    count = int(rng.integers(items_min, items_max + 1))
    sources = rng.integers(len(pool), size=count)
    scales = rng.uniform(*ITEM_SCALE, size=count) * image_size
    aspects = np.sqrt(np.exp(rng.uniform(np.log(ITEM_ASPECT[0]), np.log(ITEM_ASPECT[1]), size=count)))
    heights = np.clip(np.rint(scales * aspects), 4, image_size).astype(int)
    widths = np.clip(np.rint(scales / aspects), 4, image_size).astype(int)
    flips = rng.random(count) < 0.5
    xs = rng.integers(image_size - widths + 1)
    ys = rng.integers(image_size - heights + 1)
    hsv = rng.uniform((0.0, 0.5, 0.6), (1.0, 1.0, 1.0), size=(count, 3))
    items = []
    for source, h, w, flip in zip(sources, heights, widths, flips):
        patch = np.asarray(Image.fromarray(pool[source]).resize((int(w), int(h)), Image.BILINEAR))
        items.append(patch[:, ::-1] if flip else patch)
    colors = [tuple(255.0 * c for c in colorsys.hsv_to_rgb(*row)) for row in hsv.tolist()]
    scene = compose_scene(background, items, (pool_labels[sources] + 1).tolist(),
                          list(zip(xs.tolist(), ys.tolist())), colors)
    return scene, sources


def _paths(root: Path) -> dict[str, Path]:
    paths = {"root": root, "manifest": root / "manifest.json", "preview": root / "preview.png"}
    for split in SPLITS:
        paths[f"{split}_json"] = root / "annotations" / f"instances_{split}.json"
        paths[f"{split}_images"] = root / split / "images"
        paths[f"{split}_labels"] = root / split / "labels"
    return paths


def _categories() -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "fashion"} for i, name in enumerate(CLASSES)]


def _check_count(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an int >= {minimum}")


def generate_scenes(out: str | Path, train: int = 2000, val: int = 500, image_size: int = 128, seed: int = 0,
                    items_min: int = 1, items_max: int = 6, progress: bool = True) -> dict[str, Path]:
    """Write the fashion scenes to ``out`` (layout in the module docstring) unless they are already there.

    Args:
        out: output folder (created).
        train: number of train scenes. Default 2000.
        val: number of val scenes. Default 500.
        image_size: scene side in pixels, >= 32. Default 128.
        seed: base seed; scene ``i`` of a split depends only on ``(seed, split, i, image_size, items_*)``. Default 0.
        items_min: fewest items pasted per scene (before occlusion drops any). Default 1.
        items_max: most items pasted per scene. Default 6.
        progress: show a tqdm progress bar on stderr. Default True.

    Returns:
        paths: ``root``, ``manifest``, ``preview``, and ``{split}_json``, ``{split}_images``, ``{split}_labels``
        for ``split`` in ``train``, ``val``.
    """
    _check_count("train", train, 0)
    _check_count("val", val, 0)
    _check_count("image_size", image_size, 32)
    _check_count("items_min", items_min, 1)
    _check_count("items_max", items_max, items_min)
    _check_count("seed", seed, 0)
    paths = _paths(Path(out))
    manifest = {"format": FORMAT, "args": {"train": train, "val": val, "image_size": image_size, "seed": seed,
                                           "items_min": items_min, "items_max": items_max}}
    if paths["manifest"].is_file() and json.loads(paths["manifest"].read_text()) == manifest:
        return paths
    paths["manifest"].unlink(missing_ok=True)

    from ._preview import draw_preview  # deferred: only needed when writing

    regions = photo_regions()
    previews = []
    with tqdm(total=train + val, disable=not progress, desc="fashion scenes", unit="scene") as bar:
        for split, count in (("train", train), ("val", val)):
            source_split, split_id = SPLITS[split]
            pool, pool_labels = (t.numpy() for t in load_fashion_mnist(source_split))
            numbered_png_folder(paths[f"{split}_images"])
            numbered_png_folder(paths[f"{split}_labels"])
            images, annotations = [], []
            for index in range(count):
                rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, index]))
                scene, sources = _sample_scene(rng, pool, pool_labels, regions[split], image_size,
                                               items_min, items_max)
                name = f"{index:06d}.png"
                Image.fromarray(scene.image).save(paths[f"{split}_images"] / name)
                Image.fromarray(scene.label).save(paths[f"{split}_labels"] / name)
                images.append({"id": index + 1, "file_name": name, "width": image_size, "height": image_size,
                               "split": split})
                for inst in scene.instances:
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": index + 1, "category_id": inst.category_id,
                        "bbox": inst.bbox, "area": inst.area, "iscrowd": 0, "segmentation": rle_encode(inst.mask),
                        "source_index": int(sources[inst.item]), "source_split": source_split})
                if index < PREVIEW_SCENES:
                    previews.append((scene.image, [i.bbox for i in scene.instances],
                                     [CLASSES[i.category_id - 1] for i in scene.instances], f"{split} {name}"))
                bar.update()
            write_json(paths[f"{split}_json"], {
                "info": {"description": "Fashion scenes: Fashion-MNIST items on scikit-image photos",
                         "format": FORMAT, "split": split, **manifest["args"]},
                "licenses": [], "categories": _categories(), "images": images, "annotations": annotations})
    draw_preview(previews, paths["preview"])
    write_json(paths["manifest"], manifest)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: generate scenes (``--out``) and/or print statistics (``--stats [DIR]``)."""
    parser = argparse.ArgumentParser(prog="python -m plugins.data.scenes", description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="output folder of the scenes")
    parser.add_argument("--train", type=int, default=2000, help="train scenes (default 2000)")
    parser.add_argument("--val", type=int, default=500, help="val scenes (default 500)")
    parser.add_argument("--image-size", type=int, default=128, help="scene side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--items-min", type=int, default=1, help="fewest items per scene (default 1)")
    parser.add_argument("--items-max", type=int, default=6, help="most items per scene (default 6)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--stats", nargs="?", const="", default=None, metavar="DIR",
                        help="print statistics of DIR (default: the --out folder)")
    args = parser.parse_args(argv)
    if args.out is None and not args.stats:
        parser.error("give --out DIR to generate scenes, or --stats DIR to describe existing ones")
    try:
        if args.out is not None:
            paths = generate_scenes(args.out, train=args.train, val=args.val, image_size=args.image_size,
                                    seed=args.seed, items_min=args.items_min, items_max=args.items_max,
                                    progress=not args.no_progress)
            print(f"fashion scenes in {paths['root']} (preview: {paths['preview']})")
        if args.stats is not None:
            from .scene_stats import format_scene_stats, scene_stats

            print(format_scene_stats(scene_stats(args.stats or args.out)))
    except (ValueError, OSError) as err:  # bad counts, missing Fashion-MNIST, an --out that cannot be written
        parser.error(str(err))


if __name__ == "__main__":
    main()
