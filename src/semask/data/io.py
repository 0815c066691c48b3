"""Reading images and label maps with Pillow; every unreadable file raises :class:`DataError` naming it.

Images follow what the official pipeline sees (mmcv ``imread(flag='color')``, i.e. OpenCV ``IMREAD_COLOR``):
the EXIF orientation is applied and every mode becomes 8-bit 3-channel, but here in RGB order. Labels are read
unchanged (no EXIF rotation, like ``imread(flag='unchanged')``), as single-channel class indices.
"""

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from semask.errors import DataError

MAX_PIXELS = 2**26
"""Default limit on H * W (about 67 M pixels, e.g. 9500 x 7000) of the files :func:`read_image` and
:func:`read_label` decode: larger files are refused from their header, before decoding, instead of exhausting
memory during inference. It is below Pillow's decompression-bomb threshold (``Image.MAX_IMAGE_PIXELS``)."""

# What Pillow raises on corrupt or truncated data: OSError ("image file is truncated", "broken data stream"),
# SyntaxError (malformed PNG chunks), ValueError/EOFError (bad headers).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

# EXIF orientations 5..8 include a 90-degree rotation, so height and width swap.
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


@contextlib.contextmanager
def _open(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` (reads the header only), with every Pillow failure in the block turned into DataError."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # the max_pixels check, not Pillow's warning, decides on large files
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                yield img
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file that Pillow can read") from None
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: image too large to decode safely ({err})") from None
    except _DECODE_ERRORS as err:
        raise DataError(f"{path}: corrupt or truncated image ({err})") from err


def _decode(path: Path, apply_exif: bool, max_pixels: int | None) -> Image.Image:
    """Open ``path``, check its size against ``max_pixels`` from the header, then decode every pixel (so
    truncation is caught here), optionally EXIF-rotated."""
    with _open(path) as img:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise DataError(
                f"{path}: {height}x{width} (HxW) image of {width * height / 1e6:.1f} M pixels is above the "
                f"limit of {max_pixels / 1e6:.1f} M pixels (checked before decoding); downscale it, or raise "
                "the limit (semask predict --max-pixels N) and use --mode slide"
            )
        img.load()
        return ImageOps.exif_transpose(img) if apply_exif else img


def _sixteen_bit_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Map 0..65535 to 0..255 by rounding ``v / 257`` (so 65535 -> 255 and 257 * k -> k)."""
    scaled = (np.clip(pixels.astype(np.float64), 0, 65535) / 257.0).round()
    return scaled.astype(np.uint8)


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read an image as 8-bit RGB with its EXIF orientation applied.

    Grayscale, bilevel, palette, CMYK and YCbCr images are converted with Pillow; an alpha channel is dropped
    (not composited); 16-bit grayscale ("I;16*", and "I" read from 16-bit files) is scaled by 1/257 and
    replicated to 3 channels.

    Args:
        path: image file (any format Pillow reads: JPEG, PNG, WebP, BMP, TIFF, ...).
        max_pixels: largest H * W decoded (None: no limit beyond Pillow's), checked from the file header.

    Returns:
        (H, W, 3) uint8 RGB array, H and W after the EXIF rotation.

    Raises:
        DataError: missing, empty, non-image, truncated or corrupt file, a floating-point image, or one larger
            than ``max_pixels`` (or than Pillow's decompression-bomb limit); the message names the file and the
            problem.
    """
    path = Path(path)
    img = _decode(path, apply_exif=True, max_pixels=max_pixels)
    if img.mode in _SIXTEEN_BIT_MODES:
        gray = _sixteen_bit_to_uint8(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        raise DataError(f"{path}: 32-bit floating-point images are not supported; save it as 8-bit RGB")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_label(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read a label map of class indices (no EXIF rotation, no colour conversion).

    Palette-mode PNGs give their palette indices (not their colours), bilevel ones 0/1. A multi-channel file is accepted only
    when all its colour channels are equal (an alpha channel is ignored); 16/32-bit files only when every
    value fits in 0..255.

    Args:
        path: single-channel label image, normally a PNG.
        max_pixels: as for :func:`read_image`.

    Returns:
        (H, W) uint8 array of raw label values (before any dataset label mapping).

    Raises:
        DataError: unreadable or too large file (as :func:`read_image`), a colour or floating-point label, or
            values outside 0..255; the message names the file and the problem.
    """
    path = Path(path)
    img = _decode(path, apply_exif=False, max_pixels=max_pixels)
    values = np.asarray(img)
    if values.ndim == 3:
        colour = values[:, :, :1] if img.mode in ("LA", "PA") else values[:, :, :3]
        if (colour != colour[:, :, :1]).any():
            raise DataError(
                f"{path}: colour ({img.mode}) label map; save class indices as a single-channel "
                "(mode L or P) PNG"
            )
        values = colour[:, :, 0]
    if values.dtype.kind == "f":
        raise DataError(f"{path}: floating-point ({img.mode}) label map; save integer class indices")
    if values.dtype != np.uint8:
        lo, hi = values.min(), values.max()
        if lo < 0 or hi > 255:
            raise DataError(f"{path}: label values must be in 0..255, found {lo}..{hi}")
        values = values.astype(np.uint8)
    return np.array(values, dtype=np.uint8)


def image_size(path: str | Path) -> tuple[int, int]:
    """Size of an image as :func:`read_image` would return it, read from the header only.

    Args:
        path: image file.

    Returns:
        (H, W) in pixels, after the EXIF orientation (rotations by 90 degrees swap them).

    Raises:
        DataError: missing, empty or non-image file, or one above Pillow's decompression-bomb limit
            (truncated pixel data is not detected here; no ``max_pixels`` limit applies).
    """
    path = Path(path)
    with _open(path) as img:
        width, height = img.size
        orientation = img.getexif().get(_EXIF_ORIENTATION_TAG)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return width, height
    return height, width
