"""Paired image/label augmentations of the official SeMask-FPN pipeline (SPEC A3; mmseg 0.11 semantics).

The training pipeline is mmseg 0.11's ``Resize(keep_ratio=True)`` -> ``RandomCrop(cat_max_ratio)`` ->
``RandomFlip`` -> ``PhotoMetricDistortion`` -> ``Normalize`` -> ``Pad(seg_pad_val=255)``, reimplemented with
numpy only (no OpenCV). The pixel operations that reproduce mmcv's OpenCV calls (and detectron2's PIL resize)
bit-exactly are in :mod:`semask.data.cv2_ops`; this module holds the sizes, crops, flips and pipelines.

Conventions: images are (H, W, 3) uint8 RGB numpy arrays until :func:`normalize` makes them (3, H, W) float32
tensors; labels are (H, W) uint8 arrays of class indices with 255 = ignore, only ever nearest-resized, cropped,
flipped or padded with 255. Sizes are (h, w) in pixels unless stated. Every random draw comes from the
``numpy.random.Generator`` passed in, so a sample is reproducible from its generator's seed.
"""

from collections.abc import Sequence

import numpy as np
import torch

from semask.data import cv2_ops
from semask.data.meta import IGNORE_INDEX

MEAN = (123.675, 116.28, 103.53)
"""ImageNet RGB mean in 0..255 pixel units (mmseg ``img_norm_cfg``)."""
STD = (58.395, 57.12, 57.375)
"""ImageNet RGB std in 0..255 pixel units (mmseg ``img_norm_cfg``)."""

CAT_MAX_RATIO_TRIES = 10
"""mmseg 0.11 ``RandomCrop`` redraws a crop at most this many times to satisfy ``cat_max_ratio``."""


# ----------------------------------------------------------------------------------------------- resizing
def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Output size of mmcv ``imrescale``: the largest keep-ratio size fitting inside ``scale``.

    Args:
        height, width: input size in pixels.
        scale: (long edge, short edge) bound; the order does not matter (mmcv takes max and min).

    Returns:
        (h, w) = (int(height * f + 0.5), int(width * f + 0.5)) with
        f = min(long / max(height, width), short / min(height, width)); at least 1 pixel each.
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def resize_keep_ratio(
    img: np.ndarray, label: np.ndarray | None, scale: tuple[int, int], ratio: float = 1.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """mmseg 0.11 ``Resize(keep_ratio=True)``: mmcv ``imrescale`` of the image (bilinear) and label (nearest).

    Args:
        img: (H, W, 3) uint8.
        label: (H, W) uint8, or None to resize the image only.
        scale: (long, short) edge bound, e.g. ADE20K's (2048, 512) (SPEC A3 ``img_scale``).
        ratio: multiplies the bound first, truncated to int as mmseg's ``_random_sample_ratio`` does.

    Returns:
        (image (h, w, 3) uint8, label (h, w) uint8 or None), (h, w) given by :func:`rescale_size`.
    """
    bound = (int(scale[0] * ratio), int(scale[1] * ratio))
    size = rescale_size(img.shape[0], img.shape[1], bound)
    return cv2_ops.resize_bilinear(img, size), None if label is None else cv2_ops.resize_nearest(label, size)


def shortest_edge_size(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """Output size of detectron2 ``ResizeShortestEdge.get_output_shape``.

    Args:
        height, width: input size in pixels.
        short_edge: target length of the shorter side.
        max_size: cap on the longer side (0 = none).

    Returns:
        (h, w): the short side scaled to ``short_edge``, then both scaled down so the long side is at most
        ``max_size``, each rounded with ``int(x + 0.5)``.
    """
    scale = short_edge / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max_size and max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


PIPELINES = ("mmseg", "detectron2")
"""Test-time resize conventions: mmseg 0.11 (SeMask-FPN) and detectron2 (Mask2Former / MaskFormer / FaPN)."""


def inference_size(height: int, width: int, bound: tuple[int, int], pipeline: str) -> tuple[int, int]:
    """Size of an image after the test-time keep-ratio resize to ``bound``.

    Args:
        height, width: input size in pixels.
        bound: (long, short) edge bound in pixels (either order).
        pipeline: ``mmseg``: mmcv ``imrescale`` (:func:`rescale_size`); ``detectron2``:
            ``ResizeShortestEdge(short, max_size=long)`` (:func:`shortest_edge_size`).

    Returns:
        (h, w) in pixels.

    Raises:
        ValueError: unknown ``pipeline``.
    """
    if pipeline == "mmseg":
        return rescale_size(height, width, bound)
    if pipeline == "detectron2":
        return shortest_edge_size(height, width, min(bound), max(bound))
    raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")


def inference_resize(image: np.ndarray, size: tuple[int, int], pipeline: str) -> np.ndarray:
    """The test-time bilinear resize of the raw image, before normalisation: ``mmseg``: mmseg 0.11 ``Resize``
    (mmcv ``imresize``, cv2 ``INTER_LINEAR``, :func:`cv2_ops.resize_bilinear`); ``detectron2``:
    ``ResizeTransform`` (PIL, :func:`cv2_ops.resize_pil_bilinear`).

    Args:
        image: (H, W, 3) uint8 RGB.
        size: output (h, w), e.g. from :func:`inference_size`.
        pipeline: ``mmseg`` or ``detectron2``.

    Returns:
        (h, w, 3) uint8; ``image`` itself when the size does not change.

    Raises:
        ValueError: unknown ``pipeline``.
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    if image.shape[:2] == tuple(size):
        return image
    return (cv2_ops.resize_bilinear if pipeline == "mmseg" else cv2_ops.resize_pil_bilinear)(image, size)


# ------------------------------------------------------------------------------------------ crop and flip
def _crop_window(
    shape: tuple[int, ...], crop_size: tuple[int, int], rng: np.random.Generator
) -> tuple[slice, slice]:
    """mmseg ``RandomCrop.get_crop_bbox``: offsets uniform in [0, margin]; the window is clipped by the image."""
    margin_h, margin_w = max(shape[0] - crop_size[0], 0), max(shape[1] - crop_size[1], 0)
    top, left = int(rng.integers(0, margin_h + 1)), int(rng.integers(0, margin_w + 1))
    return slice(top, top + crop_size[0]), slice(left, left + crop_size[1])


def crop_is_varied(label: np.ndarray, cat_max_ratio: float, ignore_index: int = IGNORE_INDEX) -> bool:
    """mmseg ``RandomCrop``'s acceptance test: >1 class and the largest class below ``cat_max_ratio``.

    Args:
        label: (h, w) uint8 crop.
        cat_max_ratio: largest allowed fraction of the non-ignored pixels taken by one class.
        ignore_index: label value left out of the counts.

    Returns:
        True when at least two classes are present and max count / total count < ``cat_max_ratio``.
    """
    counts = np.bincount(label.ravel(), minlength=256)
    counts[ignore_index] = 0
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def random_crop(
    img: np.ndarray,
    label: np.ndarray,
    crop_size: tuple[int, int],
    cat_max_ratio: float,
    rng: np.random.Generator,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg 0.11 ``RandomCrop``, with the ``cat_max_ratio`` retries of SPEC A3 step 3.

    A window is drawn; when ``cat_max_ratio < 1`` it is redrawn up to 10 times while :func:`crop_is_varied`
    rejects it, and the last draw is kept even if it fails (as mmseg does). Images smaller than the crop are
    returned whole (:func:`cv2_ops.pad_to` fills them later).

    Args:
        img: (H, W, 3) uint8.
        label: (H, W) uint8.
        crop_size: (h, w) of the window.
        cat_max_ratio: see :func:`crop_is_varied`; >= 1 disables the retries.
        rng: source of the offsets (``rng.integers(0, margin + 1)`` for top, then left).
        ignore_index: label value ignored by the class counts.

    Returns:
        (image (min(H, h), min(W, w), 3), label (min(H, h), min(W, w))), views into the inputs.
    """
    window = _crop_window(label.shape, crop_size, rng)
    if cat_max_ratio < 1:
        for _ in range(CAT_MAX_RATIO_TRIES):
            if crop_is_varied(label[window], cat_max_ratio, ignore_index):
                break
            window = _crop_window(label.shape, crop_size, rng)
    return img[window], label[window]


def random_flip(
    img: np.ndarray, label: np.ndarray, prob: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg 0.11 ``RandomFlip(direction='horizontal')``: mirror both left-right when ``rng.random() < prob``.

    Args:
        img: (H, W, 3).
        label: (H, W).
        prob: flip probability (0.5 in every SeMask config).
        rng: one ``rng.random()`` draw.

    Returns:
        (image, label), both flipped or both unchanged.
    """
    if rng.random() < prob:
        return img[:, ::-1], label[:, ::-1]
    return img, label


# ------------------------------------------------------------------------------------------------ tensors
def normalize(img: np.ndarray, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> torch.Tensor:
    """mmcv ``imnormalize``: ``(img - mean) / std`` per channel, as a channel-first tensor.

    Args:
        img: (H, W, 3) uint8 RGB (already RGB: no channel swap).
        mean: per-channel RGB mean, 0..255 pixel units.
        std: per-channel RGB std, 0..255 pixel units.

    Returns:
        (3, H, W) float32 tensor.
    """
    mean32 = np.asarray(mean, dtype=np.float32)
    inv_std32 = (1.0 / np.asarray(std, dtype=np.float64)).astype(np.float32)
    pixels = (img.astype(np.float32) - mean32) * inv_std32
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def label_to_tensor(label: np.ndarray) -> torch.Tensor:
    """(H, W) uint8 label array -> (H, W) int64 tensor (a copy)."""
    return torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))


# ------------------------------------------------------------------------------------------ pipelines
def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Independent generator for one sample, so augmentations are reproducible across resumes and workers.

    Args:
        seed: run seed.
        epoch: epoch number.
        index: dataset index.

    Returns:
        ``numpy.random.default_rng([seed, epoch, index])``.
    """
    return np.random.default_rng([seed, epoch, index])


class TrainTransform:
    """The training pipeline (SPEC A3): resize -> crop -> flip -> photometric -> normalize -> pad.

    With the defaults it is mmseg's (SeMask-FPN). The detectron2 recipes (Mask2Former/MaskFormer) set
    ``short_edges`` (``ResizeShortestEdge``, 'choice' sampling), ``cat_max_ratio=1`` (their category-area crop
    constraint is off), and ``image_pad_value=128``; ColorAugSSD is the same distortion as
    :func:`cv2_ops.photometric_distortion`. (detectron2 resizes with PIL bilinear; here it is OpenCV's, as for
    mmseg.)

    Args:
        crop_size: (h, w) of the crop and of every output, e.g. (512, 512).
        scale: (long, short) resize bound before the ratio, e.g. (2048, 512).
        ratios: discrete resize ratios drawn with ``rng.choice`` (SeMask's list ``ratio_range``).
        ratio_range: (low, high) for a uniform ratio (stock mmseg tuple ``ratio_range``, Cityscapes).
            Give at most one of ``ratios`` and ``ratio_range``; with neither the ratio is 1.
        cat_max_ratio: :func:`random_crop` class-balance bound; >= 1 disables it.
        flip_prob: horizontal flip probability.
        photometric: whether to apply :func:`cv2_ops.photometric_distortion`.
        short_edges: when given, resize so the short side is ``rng.choice(short_edges)`` and the long side at most
            ``max_size`` (:func:`shortest_edge_size`) instead of ``scale`` x ratio.
        max_size: see ``short_edges`` (0 = no cap).
        image_pad_value: None pads the normalised image with 0 (mmseg); an int pads the raw image with that
            pixel value first (:func:`cv2_ops.pad_raw`, detectron2's 128).
        mean, std: RGB normalisation, 0..255 pixel units.
        seed: seed of the transform's own generator, used when ``__call__`` gets no ``rng``.

    Note:
        With DataLoader workers, pass a per-sample ``rng`` (see :func:`sample_rng`) or call
        :meth:`set_epoch_seed` per worker: copies of the internal generator in each worker draw the same numbers.

    Raises:
        ValueError: both ``ratios`` and ``ratio_range`` given, or a non-positive size.
    """

    def __init__(
        self,
        crop_size: tuple[int, int],
        scale: tuple[int, int],
        ratios: tuple[float, ...] | None = None,
        ratio_range: tuple[float, float] | None = None,
        cat_max_ratio: float = 1.0,
        flip_prob: float = 0.5,
        photometric: bool = True,
        short_edges: Sequence[int] | None = None,
        max_size: int = 0,
        image_pad_value: int | None = None,
        mean: Sequence[float] = MEAN,
        std: Sequence[float] = STD,
        seed: int | None = None,
    ) -> None:
        if ratios is not None and ratio_range is not None:
            raise ValueError("give either ratios (discrete choice) or ratio_range (uniform), not both")
        if min(crop_size) <= 0 or min(scale) <= 0:
            raise ValueError(f"crop_size {crop_size} and scale {scale} must be positive")
        self.crop_size = tuple(crop_size)
        self.scale = tuple(scale)
        self.ratios = None if ratios is None else tuple(ratios)
        self.ratio_range = None if ratio_range is None else tuple(ratio_range)
        self.cat_max_ratio = cat_max_ratio
        self.flip_prob = flip_prob
        self.photometric = photometric
        self.short_edges = None if short_edges is None else tuple(short_edges)
        self.max_size = max_size
        self.image_pad_value = image_pad_value
        self.mean, self.std = tuple(mean), tuple(std)
        self.rng = np.random.default_rng(seed)

    def set_epoch_seed(self, seed: int) -> None:
        """Reseed the transform's own generator (e.g. from (seed, epoch, worker id))."""
        self.rng = np.random.default_rng(seed)

    def _sample_ratio(self, rng: np.random.Generator) -> float:
        if self.ratios is not None:
            return float(rng.choice(self.ratios))
        if self.ratio_range is not None:
            return float(rng.uniform(*self.ratio_range))
        return 1.0

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Augment one pair.

        Args:
            image: (H, W, 3) uint8 RGB.
            label: (H, W) uint8, 255 = ignore.
            rng: generator for this sample; defaults to the transform's own.

        Returns:
            ``image``: (3, h, w) float32 normalised tensor; ``label``: (h, w) int64 tensor, padding = 255;
            (h, w) = ``crop_size``.
        """
        rng = self.rng if rng is None else rng
        if self.short_edges is None:
            image, label = resize_keep_ratio(image, label, self.scale, self._sample_ratio(rng))
        else:
            short = int(rng.choice(self.short_edges))
            size = shortest_edge_size(image.shape[0], image.shape[1], short, self.max_size)
            image, label = cv2_ops.resize_bilinear(image, size), cv2_ops.resize_nearest(label, size)
        image, label = random_crop(image, label, self.crop_size, self.cat_max_ratio, rng)
        image, label = random_flip(image, label, self.flip_prob, rng)
        if self.photometric:
            image = cv2_ops.photometric_distortion(image, rng)
        if self.image_pad_value is not None:
            image, label = cv2_ops.pad_raw(image, label, self.crop_size, self.image_pad_value)
        image_t, label_t = cv2_ops.pad_to(
            normalize(image, self.mean, self.std), label_to_tensor(label), self.crop_size
        )
        return {"image": image_t, "label": label_t}


class TestTransform:
    """The SeMask-FPN single-scale test pipeline (SPEC A3): keep-ratio resize of the image, then normalize.

    The label stays at the original size, since predictions are resized back to it before scoring.

    Args:
        scale: (long, short) resize bound (the training ``img_scale``), or None to keep the image size.
        mean, std: RGB normalisation, 0..255 pixel units.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self, scale: tuple[int, int] | None = None, mean: Sequence[float] = MEAN, std: Sequence[float] = STD
    ) -> None:
        self.scale = None if scale is None else tuple(scale)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: np.ndarray, label: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Prepare one image (and its label) for inference.

        Args:
            image: (H, W, 3) uint8 RGB.
            label: (H, W) uint8, or None.

        Returns:
            ``image``: (3, h, w) float32 normalised tensor, (h, w) from :func:`rescale_size` (or (H, W));
            ``label`` (only when given): (H, W) int64 tensor, unchanged values.
        """
        if self.scale is not None:
            image, _ = resize_keep_ratio(image, None, self.scale)
        out = {"image": normalize(image, self.mean, self.std)}
        if label is not None:
            out["label"] = label_to_tensor(label)
        return out
