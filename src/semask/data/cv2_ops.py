"""Pixel operations of the official pipelines' image libraries, reimplemented bit-exactly in numpy (SPEC A3).

mmseg 0.11 (SeMask-FPN) runs its transforms through mmcv, which calls OpenCV on uint8 images; detectron2
(Mask2Former / MaskFormer / FaPN) resizes with PIL. The functions here reproduce what those calls compute:
``cv2.resize`` ``INTER_LINEAR`` (images, mmcv ``imresize``) and legacy ``INTER_NEAREST`` (labels), PIL
``BILINEAR`` (detectron2 ``ResizeTransform``), the 8-bit ``RGB2HSV`` / ``HSV2RGB`` conversions (mmcv
``bgr2hsv`` / ``hsv2bgr``; checked against OpenCV 4.10 while writing them) and mmseg's
``PhotoMetricDistortion`` built on them, and the bottom/right padding of mmseg's ``Pad`` and of detectron2's
mask-former dataset mappers.

Conventions: images are (H, W, 3) uint8 RGB numpy arrays (channel-first tensors only in :func:`pad_to`),
labels (H, W) uint8 class indices with 255 = ignore; sizes are (h, w) in pixels. Random draws come from the
``numpy.random.Generator`` passed in. The pipelines that chain these operations are in
:mod:`semask.data.transforms`.
"""

import numpy as np
import torch
import torch.nn.functional as F

from semask.data.meta import IGNORE_INDEX

# ----------------------------------------------------------------------------------------------- resizing
_COEF_SCALE = 2048  # OpenCV INTER_RESIZE_COEF_SCALE: uint8 bilinear weights are 11-bit fixed point


def _linear_taps(src: int, dst: int, clamp_weights: bool) -> tuple[np.ndarray, ...]:
    """cv2 ``INTER_LINEAR`` along one axis: per output index, two source indices and their 11-bit weights.

    The source position is ``(x + 0.5) * src / dst - 0.5`` in float32. Taps outside the image are moved onto
    the edge pixel; OpenCV's horizontal pass also gives that pixel the full weight (``clamp_weights``), its
    vertical pass keeps the fractional weights (which changes the fixed-point rounding).
    """
    pos = ((np.arange(dst) + 0.5) * (1.0 / (dst / src)) - 0.5).astype(np.float32)
    first = np.floor(pos).astype(np.int64)
    frac = pos - first.astype(np.float32)
    if clamp_weights:
        frac[(first < 0) | (first >= src - 1)] = 0.0
        first = np.clip(first, 0, src - 1)
    weight_first = np.rint((np.float32(1) - frac) * np.float32(_COEF_SCALE)).astype(np.int32)
    weight_second = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int32)
    return np.clip(first, 0, src - 1), np.clip(first + 1, 0, src - 1), weight_first, weight_second


def resize_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize reproducing ``cv2.resize(..., INTER_LINEAR)`` on uint8 (no antialiasing when shrinking).

    Integer arithmetic as OpenCV's kernels: 11-bit weights, a horizontal pass, then a vertical pass that keeps
    the high 16 bits of each product and rounds with ``(t + 2) >> 2``. Bit-identical to OpenCV 4.10 on the
    random sizes (1..600 pixels, shrinking and enlarging) it was checked against.

    Args:
        img: (H, W, C) uint8.
        size: output (h, w).

    Returns:
        (h, w, C) uint8.
    """
    y0, y1, wy0, wy1 = _linear_taps(img.shape[0], size[0], clamp_weights=False)
    x0, x1, wx0, wx1 = _linear_taps(img.shape[1], size[1], clamp_weights=True)
    pixels = img.astype(np.int32)  # every intermediate below fits in 27 bits
    rows = pixels[:, x0] * wx0[:, None] + pixels[:, x1] * wx1[:, None]  # (H, w, C), scaled by 2^11
    top = ((rows[y0] >> 4) * wy0[:, None, None]) >> 16  # (h, w, C)
    bottom = ((rows[y1] >> 4) * wy1[:, None, None]) >> 16
    return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)


def resize_nearest(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with ``cv2.resize(..., INTER_NEAREST)`` sampling: source = floor(x * src / dst).

    Args:
        label: (H, W) array of any dtype.
        size: output (h, w).

    Returns:
        (h, w) array of ``label``'s dtype, containing only values of ``label``.
    """
    (height, width), (new_h, new_w) = label.shape[:2], size
    rows = np.minimum(np.floor(np.arange(new_h) * (1.0 / (new_h / height))).astype(np.int64), height - 1)
    cols = np.minimum(np.floor(np.arange(new_w) * (1.0 / (new_w / width))).astype(np.int64), width - 1)
    return label[rows[:, None], cols[None, :]]


def resize_pil_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """detectron2 ``ResizeTransform.apply_image`` on uint8: ``PIL.Image.resize`` with ``BILINEAR`` (which, unlike
    OpenCV, widens its filter to average every source pixel when shrinking).

    Args:
        img: (H, W, 3) uint8.
        size: output (h, w).

    Returns:
        (h, w, 3) uint8.
    """
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.BILINEAR))


# --------------------------------------------------------------------------------------- colour jitter
_HSV_SHIFT = 12
# OpenCV RGB2HSV_b tables: round((255 << 12) / v) and round((180 << 12) / (6 * diff)), entry 0 = 0.
_SAT_DIV = np.concatenate([[0], np.rint((255 << _HSV_SHIFT) / np.arange(1.0, 256))]).astype(np.int32)
_HUE_DIV = np.concatenate([[0], np.rint((180 << _HSV_SHIFT) / (6.0 * np.arange(1.0, 256)))]).astype(np.int32)
# OpenCV HSV2RGB sector table: which of (v, v(1-s), v(1-sf), v(1-s(1-f))) gives B, G, R in each 60-degree sector.
_SECTOR_BGR = np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])


def rgb_to_hsv(img: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit ``cvtColor(RGB2HSV)`` (integer table algorithm), as mmcv ``bgr2hsv`` does on uint8.

    Args:
        img: (H, W, 3) uint8 RGB.

    Returns:
        (H, W, 3) uint8 HSV with H in 0..179 (degrees / 2), S and V in 0..255.
    """
    rgb = img.astype(np.int32)  # hue * _HUE_DIV stays below 2^25
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    diff = value - rgb.min(axis=-1)
    rounding = 1 << (_HSV_SHIFT - 1)
    sat = (diff * _SAT_DIV[value] + rounding) >> _HSV_SHIFT
    hue = np.where(
        value == red, green - blue, np.where(value == green, blue - red + 2 * diff, red - green + 4 * diff)
    )
    hue = (hue * _HUE_DIV[diff] + rounding) >> _HSV_SHIFT
    hue = np.where(hue < 0, hue + 180, hue)
    return np.stack([hue, sat, value], axis=-1).astype(np.uint8)


def _one_minus_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 ``1 - a * b`` rounded once, as the fused multiply-add of OpenCV's SIMD kernel (the float32
    product is exact in float64)."""
    return (1.0 - a.astype(np.float64) * b).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit ``cvtColor(HSV2RGB)``, as mmcv ``hsv2bgr`` runs it on uint8 images.

    float32 sector formula with the rounding of OpenCV's SIMD kernel (fused ``1 - s * f``, truncation to
    uint8): identical to OpenCV 4.10 on all 180 x 256 x 256 inputs, except that OpenCV's scalar code for the
    last (< 32) pixels of some rows rounds instead, a difference of at most 1 grey level.

    Args:
        hsv: (H, W, 3) uint8 HSV, H in 0..179 (degrees / 2).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    hue = hsv[..., 0].astype(np.float32) * (np.float32(6) / np.float32(180))  # 0..6, one unit per 60 degrees
    sat = hsv[..., 1].astype(np.float32) * np.float32(1 / 255)
    value = hsv[..., 2].astype(np.float32) * np.float32(1 / 255)
    sector = np.floor(hue).astype(np.int64)
    frac = hue - sector.astype(np.float32)
    sector %= 6
    table = np.stack(
        [
            value,
            value * _one_minus_product(sat, np.float32(1)),
            value * _one_minus_product(sat, frac),
            value * _one_minus_product(sat, np.float32(1) - frac),
        ],
        axis=-1,
    )
    bgr = np.take_along_axis(table, _SECTOR_BGR[sector], axis=-1)  # (H, W, 3)
    return np.clip(bgr[..., ::-1] * np.float32(255), 0, 255).astype(np.uint8)


def _scale_shift(pixels: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion.convert``: float32 ``x * alpha + beta``, clipped to 0..255, truncated to uint8."""
    return np.clip(pixels.astype(np.float32) * np.float32(alpha) + np.float32(beta), 0, 255).astype(np.uint8)


def _random_contrast(
    img: np.ndarray, rng: np.random.Generator, contrast_range: tuple[float, float]
) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion.contrast``: (H, W, 3) uint8 ``* uniform(*contrast_range)`` when
    ``rng.integers(2)`` draws 1, else unchanged."""
    if rng.integers(2):
        return _scale_shift(img, alpha=rng.uniform(*contrast_range))
    return img


def photometric_distortion(
    img: np.ndarray,
    rng: np.random.Generator,
    brightness_delta: int = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> np.ndarray:
    """mmseg 0.11 ``PhotoMetricDistortion`` (SPEC A3 step 5), on the uint8 image as in the official pipeline.

    Each step runs with probability 0.5 (``rng.integers(2)``) and rounds back to uint8 (clip, truncate):
    brightness ``+ uniform(-32, 32)``; a coin picks whether contrast ``* uniform(0.5, 1.5)`` comes first or
    last; saturation ``* uniform(0.5, 1.5)`` in 8-bit HSV; hue ``+ integers(-18, 18)`` (numpy ``randint``
    semantics: -18..17) modulo 180 in 8-bit HSV. Brightness and contrast act per channel, so RGB order gives
    the same result as mmseg's BGR; so do the HSV round trips.

    Args:
        img: (H, W, 3) uint8 RGB.
        rng: source of the draws, in mmseg's order.
        brightness_delta: max absolute brightness shift, in grey levels.
        contrast_range: (low, high) contrast factor.
        saturation_range: (low, high) saturation factor.
        hue_delta: hue shift bound in OpenCV 8-bit hue units (2 degrees each).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    if rng.integers(2):
        img = _scale_shift(img, beta=rng.uniform(-brightness_delta, brightness_delta))
    contrast_first = rng.integers(2) == 1
    if contrast_first:
        img = _random_contrast(img, rng, contrast_range)
    if rng.integers(2):
        hsv = rgb_to_hsv(img)
        hsv[..., 1] = _scale_shift(hsv[..., 1], alpha=rng.uniform(*saturation_range))
        img = hsv_to_rgb(hsv)
    if rng.integers(2):
        hsv = rgb_to_hsv(img)
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + rng.integers(-hue_delta, hue_delta)) % 180
        img = hsv_to_rgb(hsv)
    if not contrast_first:
        img = _random_contrast(img, rng, contrast_range)
    return img


# ------------------------------------------------------------------------------------------------ padding
def pad_to(
    img: torch.Tensor, label: torch.Tensor, size: tuple[int, int], ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """mmseg 0.11 ``Pad(size=crop_size, pad_val=0, seg_pad_val=255)``: pad at the bottom and right.

    Runs after :func:`semask.data.transforms.normalize`, as in mmseg, so padded image pixels are 0 in normalised units.

    Args:
        img: (C, H, W) tensor, H <= h and W <= w.
        label: (H, W) tensor.
        size: target (h, w).
        ignore_index: fill value of the label.

    Returns:
        (image (C, h, w) filled with 0, label (h, w) filled with ``ignore_index``).

    Raises:
        ValueError: the input is larger than ``size``.
    """
    pad_h, pad_w = size[0] - img.shape[-2], size[1] - img.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"cannot pad a {tuple(img.shape[-2:])} image to the smaller size {tuple(size)}")
    return F.pad(img, (0, pad_w, 0, pad_h), value=0.0), F.pad(label, (0, pad_w, 0, pad_h), value=ignore_index)


def pad_raw(
    img: np.ndarray, label: np.ndarray, size: tuple[int, int], value: int, ignore_index: int = IGNORE_INDEX
) -> tuple[np.ndarray, np.ndarray]:
    """detectron2 mask-former dataset mappers' padding: raw image pixels ``value`` (128), label ``ignore_index``,
    at the bottom and right, before normalisation.

    Args:
        img: (H, W, 3) uint8 with H <= h, W <= w; label: (H, W) uint8.
        size: target (h, w).

    Returns:
        (image (h, w, 3) uint8, label (h, w) uint8).
    """
    pad = ((0, size[0] - img.shape[0]), (0, size[1] - img.shape[1]))
    return np.pad(img, (*pad, (0, 0)), constant_values=value), np.pad(
        label, pad, constant_values=ignore_index
    )
