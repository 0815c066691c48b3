"""Colour label maps with a palette, overlays, and the 2x2 picture of the four semantic-prior maps."""

import numpy as np
from PIL import Image


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """A fixed pseudo-random palette (for converted weights that carry no dataset palette)."""
    rng = np.random.default_rng(0)
    return [tuple(int(v) for v in c) for c in rng.integers(0, 256, size=(num_classes, 3))]


def label_image(label: np.ndarray, palette) -> Image.Image:
    """(H, W) class indices -> palette-mode ("P") PNG-ready image; values >= len(palette) become black."""
    flat = [v for c in palette for v in c][: 256 * 3]
    img = Image.fromarray(np.where(label < len(palette), label, 255).astype(np.uint8), mode="P")
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img


def overlay(image: np.ndarray, label: np.ndarray, palette, opacity: float = 0.5) -> Image.Image:
    """Blend the coloured label map onto the (H, W, 3) uint8 RGB image."""
    colours = np.asarray(label_image(label, palette).convert("RGB"), dtype=np.float32)
    return Image.fromarray((image * (1 - opacity) + colours * opacity).astype(np.uint8))


def priors_grid(priors: list[np.ndarray], palette) -> Image.Image:
    """Four (H, W) prior argmax maps (strides 4, 8, 16, 32) as a 2x2 RGB mosaic of size (2H, 2W)."""
    tiles = [np.asarray(label_image(p, palette).convert("RGB")) for p in priors]
    return Image.fromarray(np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0))
