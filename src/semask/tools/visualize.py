"""Colour label maps with a palette, overlays with a legend of the classes present, and the titled 2x2 picture
of the four semantic-prior maps with a class key. Text is drawn with PIL's default font (no optional packages).
"""

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Colour = tuple[int, int, int]
PRIOR_STRIDES = (4, 8, 16, 32)
_PAD = 4


def default_palette(num_classes: int) -> list[Colour]:
    """A fixed pseudo-random palette (for converted weights that carry no dataset palette)."""
    rng = np.random.default_rng(0)
    return [tuple(int(v) for v in c) for c in rng.integers(0, 256, size=(num_classes, 3))]


def label_image(label: np.ndarray, palette: Sequence[Colour]) -> Image.Image:
    """(H, W) class indices -> palette-mode ("P") PNG-ready image; values >= len(palette) become black."""
    flat = [v for c in palette for v in c][: 256 * 3]
    img = Image.fromarray(np.where(label < len(palette), label, 255).astype(np.uint8), mode="P")
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    return font.getbbox("Ag")[3] + _PAD


def legend_panel(rows: Sequence[tuple[Colour, str]], height: int = 0) -> Image.Image:
    """A white RGB panel with one row per ``(colour, text)``: a colour swatch, then the text.

    Args:
        rows: the entries, top to bottom.
        height: the panel's minimum height in pixels (it grows to fit the rows).
    """
    font = ImageFont.load_default()
    line = _line_height(font)
    text_width = max((int(font.getlength(text)) for _, text in rows), default=0)
    size = (3 * _PAD + line + text_width, max(height, 2 * _PAD + line * len(rows)))
    panel = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(panel)
    for i, (colour, text) in enumerate(rows):
        top = _PAD + i * line
        draw.rectangle((_PAD, top + 1, _PAD + line - 3, top + line - 2), fill=tuple(colour), outline="black")
        draw.text((2 * _PAD + line, top), text, fill="black", font=font)
    return panel


def class_rows(
    label: np.ndarray, palette: Sequence[Colour], names: Sequence[str], area: bool = True
) -> list[tuple[Colour, str]]:
    """Legend rows of the classes present in ``label`` (H, W), largest first: ``(colour, "name (12.3%)")``
    (the share of the pixels), or ``(colour, "name")`` without ``area``."""
    counts = np.bincount(label.ravel(), minlength=len(names))[: len(names)]
    order = [int(k) for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
    return [
        (palette[k], f"{names[k]} ({100 * counts[k] / label.size:.1f}%)" if area else names[k]) for k in order
    ]


def _beside(image: Image.Image, panel: Image.Image) -> Image.Image:
    """``image`` at the top left of a white canvas with ``panel`` to its right."""
    canvas = Image.new("RGB", (image.width + panel.width, max(image.height, panel.height)), "white")
    canvas.paste(image, (0, 0))
    canvas.paste(panel, (image.width, 0))
    return canvas


def overlay(
    image: np.ndarray,
    label: np.ndarray,
    palette: Sequence[Colour],
    opacity: float = 0.5,
    names: Sequence[str] | None = None,
) -> Image.Image:
    """Blend the coloured label map onto the (H, W, 3) uint8 RGB image.

    Args:
        names: class names; when given, a legend of the classes present (colour, name, area %, largest first)
            is drawn to the right: the picture is then (max(H, legend height), W + legend width), the blend at
            its top left. Without names it is the (H, W) blend alone.
    """
    colours = np.asarray(label_image(label, palette).convert("RGB"), dtype=np.float32)
    blend = Image.fromarray((image * (1 - opacity) + colours * opacity).astype(np.uint8))
    if names is None:
        return blend
    return _beside(blend, legend_panel(class_rows(label, palette, names), blend.height))


def _titled(tile: Image.Image, title: str) -> Image.Image:
    """``tile`` below a white strip holding ``title``."""
    font = ImageFont.load_default()
    strip = _line_height(font) + _PAD
    canvas = Image.new("RGB", (tile.width, tile.height + strip), "white")
    ImageDraw.Draw(canvas).text((_PAD, _PAD // 2), title, fill="black", font=font)
    canvas.paste(tile, (0, strip))
    return canvas


def priors_grid(
    priors: Sequence[np.ndarray], palette: Sequence[Colour], names: Sequence[str] | None = None
) -> Image.Image:
    """Four (H, W) prior argmax maps (strides 4, 8, 16, 32) as a 2x2 RGB mosaic.

    Args:
        names: class names; when given, each tile is titled ("stage 1 prior, 1/4", ...) and a key of the classes
            present in any of the four maps is drawn to the right. Without names the mosaic is (2H, 2W).
    """
    tiles = [label_image(p, palette).convert("RGB") for p in priors]
    if names is not None:
        tiles = [
            _titled(t, f"stage {i + 1} prior, 1/{s}")
            for i, (t, s) in enumerate(zip(tiles, PRIOR_STRIDES, strict=True))
        ]
    w, h = tiles[0].size
    grid = Image.new("RGB", (2 * w, 2 * h), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % 2) * w, (i // 2) * h))
    if names is None:
        return grid
    key = class_rows(np.stack(priors), palette, names, area=False)
    return _beside(grid, legend_panel(key, grid.height))
