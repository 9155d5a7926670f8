"""A contact sheet of images with their boxes and class names, for a quick look at a detection set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_PALETTE = ((255, 64, 64), (64, 224, 64), (64, 128, 255), (255, 200, 0), (255, 0, 255),
            (0, 224, 224), (255, 128, 0), (160, 96, 255), (255, 255, 255), (128, 255, 128))


def draw_preview(tiles: Sequence[tuple[np.ndarray, list[list[int]], list[str], str]], path: Path,
                 columns: int = 4, tile_side: int = 256) -> None:
    """Save a grid of ``(image uint8 [H, W, 3], boxes [x, y, w, h], names, caption)`` tiles as a PNG.

    Each image is scaled to ``tile_side`` pixels wide (default 256), boxes are drawn around whole pixels
    (``w = x_max - x_min + 1``) with the class name above, and the caption in the tile's top-left corner.
    """
    font = ImageFont.load_default()
    rows = max(1, -(-len(tiles) // columns))
    sheet = Image.new("RGB", (columns * tile_side, rows * tile_side))
    for n, (image, boxes, names, caption) in enumerate(tiles):
        scale = tile_side / image.shape[1]
        tile = Image.fromarray(image).resize((tile_side, round(image.shape[0] * scale)), Image.BILINEAR)
        draw = ImageDraw.Draw(tile)
        for k, ((x, y, w, h), name) in enumerate(zip(boxes, names)):
            color = _PALETTE[k % len(_PALETTE)]
            x0, y0, x1, y1 = x * scale, y * scale, (x + w) * scale - 1, (y + h) * scale - 1
            draw.rectangle((x0, y0, x1, y1), outline=color, width=2)
            _label(draw, (x0 + 1, max(0.0, y0 - 12)), name, color, font)
        _label(draw, (2, tile.height - 13), caption, (255, 255, 255), font)
        sheet.paste(tile, ((n % columns) * tile_side, (n // columns) * tile_side))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, color: tuple[int, int, int],
           font: ImageFont.ImageFont) -> None:
    """Text on a black box, readable on any background."""
    draw.rectangle(draw.textbbox(xy, text, font=font), fill=(0, 0, 0))
    draw.text(xy, text, fill=color, font=font)
