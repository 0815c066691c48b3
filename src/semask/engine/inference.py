"""Whole and slide inference, ms+flip TTA, and the in-memory :class:`Predictor` (SPEC A3 'Test pipeline').

Official source: mmseg 0.11 ``EncoderDecoder.whole_inference`` / ``slide_inference`` / ``aug_test``.
"""

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semask.data.transforms import normalize, rescale_size
from semask.hardware import resolve_amp
from semask.layers.impl import get_impl


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``amp`` in {"none", "bf16", "fp16"}, as :func:`semask.hardware.resolve_amp` decides
    for ``device`` (bf16 without native bf16 runs fp32 and says so once).

    Raises:
        ConfigError: ``"fp16"`` on CPU, or an unknown ``amp``.
    """
    amp = resolve_amp(amp, device)
    if amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device.type, dtype=dtype)


def slide_logits(
    model: nn.Module, img: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]
) -> torch.Tensor:
    """Sliding-window logits (mmseg ``slide_inference``): overlapping crops, logits averaged.

    Args:
        img: (B, 3, H, W) normalised; crop, stride: (h, w) in pixels.

    Returns:
        (B, K, H, W) float32 logits.
    """
    b, _, h, w = img.shape
    (ch, cw), (sh, sw) = crop, stride
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    logits = count = None
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, h), min(c * sw + cw, w)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            out = model.predict_logits(img[:, :, y1:y2, x1:x2]).float()  # (B, K, y2-y1, x2-x1)
            if logits is None:
                logits = img.new_zeros((b, out.shape[1], h, w), dtype=torch.float32)
                count = img.new_zeros((1, 1, h, w), dtype=torch.float32)
            logits[:, :, y1:y2, x1:x2] += out
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count


@dataclass
class InferenceCfg:
    """How to turn a normalised image into class probabilities.

    Attributes:
        mode: ``whole`` or ``slide``.
        crop, stride: slide window and step (h, w) in pixels.
        scale: keep-ratio test scale (long, short) or None to infer at the original size.
        tta_ratios: scale ratios for ms TTA (``(1.0,)`` = single scale).
        tta_scales: explicit keep-ratio (long, short) bounds of the TTA passes, replacing ``scale`` x ratios
            (detectron2 ``TEST.AUG``: short sides ``MIN_SIZES`` with long side at most ``MAX_SIZE``).
        flip: add horizontally flipped passes.
        amp: ``none`` | ``bf16`` | ``fp16``.
    """

    mode: str = "whole"
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    scale: tuple[int, int] | None = None
    tta_ratios: Sequence[float] = (1.0,)
    tta_scales: Sequence[tuple[int, int]] | None = None
    flip: bool = False
    amp: str = "none"


def _pass_sizes(h: int, w: int, cfg: InferenceCfg) -> list[tuple[int, int]]:
    """(h, w) of each TTA scale: explicit bounds, ``scale`` x ratio (mmseg ``MultiScaleFlipAug``), or input x ratio."""
    if cfg.tta_scales is not None:
        return [rescale_size(h, w, bound) for bound in cfg.tta_scales]
    if cfg.scale is not None:
        return [rescale_size(h, w, (int(cfg.scale[0] * r), int(cfg.scale[1] * r))) for r in cfg.tta_ratios]
    return [(max(1, math.floor(h * r + 0.5)), max(1, math.floor(w * r + 0.5))) for r in cfg.tta_ratios]


@torch.no_grad()
def predict_probs(model: nn.Module, img: torch.Tensor, cfg: InferenceCfg) -> torch.Tensor:
    """Class probabilities at the input size, averaged over the TTA passes (mmseg ``aug_test``; detectron2
    ``SemanticSegmentorWithTTA`` for mask-classification models).

    Each pass resizes the image (keep ratio, bilinear), infers whole or slide, takes the softmax (models whose
    ``scores_not_logits`` is True, i.e. Mask2Former/MaskFormer, give their class scores as they are), un-flips,
    and resizes back to (H, W); the maps are averaged.

    Args:
        img: (B, 3, H, W) normalised images.

    Returns:
        (B, K, H, W) float32 probabilities (scores for mask-classification models).
    """
    h, w = img.shape[-2:]
    total, passes = None, 0
    for size in _pass_sizes(h, w, cfg):
        x = img if size == (h, w) else F.interpolate(img, size=size, mode="bilinear", align_corners=False)
        for flip in (False, True) if cfg.flip else (False,):
            xi = x.flip(-1) if flip else x
            with autocast(img.device, cfg.amp):
                if cfg.mode == "slide":
                    logits = slide_logits(model, xi, cfg.crop, cfg.stride)
                else:
                    logits = model.predict_logits(xi)
            probs = (
                logits.float()
                if getattr(model, "scores_not_logits", False)
                else logits.float().softmax(dim=1)
            )
            if flip:
                probs = probs.flip(-1)
            if probs.shape[-2:] != (h, w):
                probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
            total = probs if total is None else total + probs
            passes += 1
    return total / passes


def upsampled_argmax(
    logits: torch.Tensor, size: tuple[int, int], chunk_bytes: int = 8 * 2**20
) -> torch.Tensor:
    """``F.interpolate(logits, size, mode="bilinear", align_corners=False).argmax(1)`` without the (B, K, H, W)
    tensor: the classes are resized and reduced a chunk of about ``chunk_bytes`` at a time, keeping the running
    maximum. Each channel resizes on its own, so the values are those of the full resize, and ties keep the
    first class, as ``argmax`` does. Half-precision logits are resized channels-last (about 3x faster on CPU
    than NCHW), fp32 ones NCHW (faster there).

    Args:
        logits: (B, K, h, w) class logits (any float dtype).
        size: output (H, W) in pixels.

    Returns:
        (B, H, W) int64 class indices.
    """
    half = logits.element_size() < 4
    logits = logits.contiguous(memory_format=torch.channels_last if half else torch.contiguous_format)
    per_class = logits.shape[0] * size[0] * size[1] * logits.element_size()
    step = max(1, chunk_bytes // per_class)
    best = labels = None
    for k in range(0, logits.shape[1], step):
        up = F.interpolate(logits[:, k : k + step], size=size, mode="bilinear", align_corners=False)
        value, index = up.max(dim=1)
        if best is None:
            best, labels = value, index
        else:
            labels = torch.where(value > best, index + k, labels)
            best = torch.maximum(value, best)
    return labels


@torch.no_grad()
def predict_labels(model: nn.Module, img: torch.Tensor, cfg: InferenceCfg) -> torch.Tensor:
    """Class map at the input size: the argmax over classes of :func:`predict_probs` (mmseg ``simple_test``).

    With the ``fast`` implementation, a single whole-image pass (no flip, no rescale) of a model with
    ``decode_logits`` (the FPN models) takes the argmax of the resized logits chunk by chunk
    (:func:`upsampled_argmax`); the (B, K, H, W) logits and probabilities are never built. The softmax does not
    change the argmax.

    Args:
        img: (B, 3, H, W) normalised images.

    Returns:
        (B, H, W) int64 class indices.
    """
    h, w = img.shape[-2:]
    single_pass = cfg.mode == "whole" and not cfg.flip and _pass_sizes(h, w, cfg) == [(h, w)]
    if single_pass and get_impl() == "fast" and hasattr(model, "decode_logits"):
        with autocast(img.device, cfg.amp):
            return upsampled_argmax(model.decode_logits(img), (h, w))
    return predict_probs(model, img, cfg).argmax(1)


def normalize_image(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 normalised with the presets' ImageNet mean/std."""
    return normalize(image).unsqueeze(0).to(device)


class Predictor:
    """Single-image inference in memory: raw RGB array (or path) in, (H, W) class map out.

    Args:
        model: a segmenter with ``predict_logits`` (e.g. :class:`semask.SeMaskFPN`).
        cfg: inference settings (whole/slide, TTA, amp).
        device: where to run.
    """

    def __init__(self, model: nn.Module, cfg: InferenceCfg | None = None, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.cfg = cfg or InferenceCfg()
        self.device = torch.device(device)

    def _load(self, image) -> np.ndarray:
        if isinstance(image, np.ndarray):
            return image
        from semask.data.io import read_image

        return read_image(image)

    def predict(self, image) -> np.ndarray:
        """Args:
            image: (H, W, 3) uint8 RGB array, or an image path (EXIF orientation applied).

        Returns:
            (H, W) int64 class indices at the original size.
        """
        x = normalize_image(self._load(image), self.device)
        return predict_labels(self.model, x, self.cfg)[0].cpu().numpy()

    @torch.no_grad()
    def predict_priors(self, image) -> list[np.ndarray]:
        """Argmax of the four semantic-prior maps (strides 4, 8, 16, 32), each resized to (H, W).

        Returns:
            4 x (H, W) int64 class indices; raises ValueError for models without semantic layers.
        """
        img = self._load(image)
        x = normalize_image(img, self.device)
        with autocast(self.device, self.cfg.amp):
            maps = self.model.forward_features(x).semantic_maps
        if maps is None:
            raise ValueError("this model has no semantic layers (plain Swin baseline): no prior maps")
        size = img.shape[:2]
        return [
            F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False)[0]
            .argmax(0)
            .cpu()
            .numpy()
            for m in maps
        ]
