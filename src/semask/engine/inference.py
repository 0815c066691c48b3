"""Whole and slide inference, ms+flip TTA, and the in-memory :class:`Predictor` (SPEC A3 'Test pipeline').

Official sources: FPN models follow mmseg 0.11 (``MultiScaleFlipAug`` / ``Resize`` on the uint8 image, then
``EncoderDecoder.whole_inference`` / ``slide_inference`` / ``inference(rescale=True)`` / ``simple_test`` /
``aug_test``: logits resized to the original size, then the softmax); mask-classification models follow
detectron2 (``ResizeShortestEdge`` with PIL on the uint8 image, ``sem_seg_postprocess``,
``SemanticSegmentorWithTTA`` over ``DatasetMapperTTA``).
"""

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from semask.configs.schema import InferenceCfg, check_window
from semask.data.transforms import inference_resize, inference_size, normalize
from semask.hardware import resolve_amp
from semask.models.segmenter import Segmenter


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
    model: Segmenter, img: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]
) -> torch.Tensor:
    """Sliding-window inference (mmseg ``slide_inference``): overlapping crops, their :meth:`Segmenter.predict`
    maps (logits or scores, as ``model.output_kind``) averaged.

    Args:
        img: (B, 3, H, W) normalised; crop, stride: (h, w) in pixels, stride <= crop.

    Returns:
        (B, K, H, W) float32 maps.

    Raises:
        ConfigError: a non-positive crop or stride, or a stride larger than the crop (pixels left uncovered).
    """
    check_window(crop, stride)
    b, _, h, w = img.shape
    (ch, cw), (sh, sw) = crop, stride
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    logits = count = None
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, h), min(c * sw + cw, w)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            out = model.predict(img[:, :, y1:y2, x1:x2]).float()  # (B, K, y2-y1, x2-x1)
            if logits is None:
                logits = img.new_zeros((b, out.shape[1], h, w), dtype=torch.float32)
                count = img.new_zeros((1, 1, h, w), dtype=torch.float32)
            logits[:, :, y1:y2, x1:x2] += out
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count


def _pass_sizes(
    model: Segmenter, h: int, w: int, cfg: InferenceCfg
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """(h, w) of the test-resized image and of every TTA pass, for an (h, w) input, in the official test pipeline of
    the model's family (:func:`pipeline_of`):

    - ``mmseg`` (mmseg 0.11 ``MultiScaleFlipAug`` + ``Resize(keep_ratio=True)``): each pass resizes the image to
      the bound ``scale`` x ratio (with ``scale=None``: (h, w) x ratio) or ``tta_scales[i]`` (mmcv ``imrescale``).
    - ``detectron2``: the test mapper's ``ResizeShortestEdge`` to ``scale``, then each pass resizes that image
      again to its bound, as ``DatasetMapperTTA`` does with the test-resized image.
    """
    pipeline = model.test_pipeline
    base = (h, w) if pipeline == "mmseg" or cfg.scale is None else inference_size(h, w, cfg.scale, pipeline)
    scale = cfg.scale or (h, w)
    bounds = cfg.tta_scales or [(int(scale[0] * r), int(scale[1] * r)) for r in cfg.tta_ratios]
    return base, [inference_size(*base, bound, pipeline) for bound in bounds]


def _pass_inputs(
    model: Segmenter, images: torch.Tensor | np.ndarray, cfg: InferenceCfg
) -> tuple[list[torch.Tensor], tuple[int, int]]:
    """Normalised (B, 3, h_i, w_i) input of every TTA pass (before flipping) and the output size (H, W).

    A uint8 image is resized as :func:`_pass_sizes` says (cv2 bilinear for ``mmseg``, PIL bilinear for
    ``detectron2``; :func:`semask.data.transforms.inference_resize`), then normalised. A normalised tensor is
    used as it is.

    Raises:
        ValueError: a tensor input whose passes would resize it.
    """
    h, w = images.shape[-2:] if isinstance(images, torch.Tensor) else images.shape[:2]
    base, sizes = _pass_sizes(model, h, w, cfg)
    if isinstance(images, torch.Tensor):
        if {base, *sizes} != {(h, w)}:
            raise ValueError(
                f"these passes resize the image (to {sorted(set(sizes))}), which the official pipelines do on the "
                "uint8 image before normalising: give the (H, W, 3) uint8 image instead of a normalised tensor"
            )
        return [images] * len(sizes), (h, w)
    pipeline, device = model.test_pipeline, next(model.parameters()).device
    base_image = inference_resize(images, base, pipeline)
    return [normalize_image(inference_resize(base_image, size, pipeline), device) for size in sizes], (h, w)


@torch.no_grad()
def predict_probs(model: Segmenter, images: torch.Tensor | np.ndarray, cfg: InferenceCfg) -> torch.Tensor:
    """Class probabilities at the input size, averaged over the TTA passes.

    FPN models reproduce mmseg 0.11 ``EncoderDecoder.aug_test``: each pass (see :func:`_pass_inputs`) infers whole
    or slide at its size, resizes the *logits* to (H, W) (bilinear, ``inference(rescale=True)``), takes the
    softmax and un-flips. Mask-classification models (``output_kind == "scores"``) reproduce detectron2
    ``SemanticSegmentorWithTTA``: their class scores are resized to (H, W) (``sem_seg_postprocess``) and un-flipped,
    without a softmax. The maps are averaged.

    Args:
        images: (H, W, 3) uint8 RGB image (the official pipelines resize it before normalising), or (B, 3, H, W)
            normalised images when no pass resizes them.

    Returns:
        (B, K, H, W) float32 probabilities (scores for mask-classification models); B = 1 for an image.

    Raises:
        ConfigError: invalid ``cfg`` (:meth:`InferenceCfg.validate`).
        ValueError: a tensor input that a pass would resize.
    """
    cfg.validate()
    passes, size = _pass_inputs(model, images, cfg)
    total = None
    for x in passes:
        for flip in (False, True) if cfg.flip else (False,):
            xi = x.flip(-1) if flip else x
            with autocast(x.device, cfg.amp):
                if cfg.mode == "slide":
                    out = slide_logits(model, xi, cfg.crop, cfg.stride)
                else:
                    out = model.predict(xi)
            out = out.float()
            if out.shape[-2:] != size:
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
            probs = out.softmax(dim=1) if model.output_kind == "logits" else out
            probs = probs.flip(-1) if flip else probs
            total = probs if total is None else total + probs
    return total / (len(passes) * (2 if cfg.flip else 1))


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
def predict_labels(model: Segmenter, images: torch.Tensor | np.ndarray, cfg: InferenceCfg) -> torch.Tensor:
    """Class map at the input size: the argmax over classes of :func:`predict_probs` (mmseg ``simple_test`` /
    ``aug_test``; detectron2 ``SemSegEvaluator.process`` takes the argmax of ``sem_seg``).

    A single whole-image pass at the input size (no flip, no rescale) of a model whose decoder outputs logits
    below the input resolution (``output_stride`` > 1: the mmseg heads) takes the argmax of the resized logits
    chunk by chunk (:func:`upsampled_argmax`); the (B, K, H, W) logits and probabilities are never built. The
    softmax does not change the argmax.

    Args:
        images: as :func:`predict_probs`.

    Returns:
        (B, H, W) int64 class indices; B = 1 for an image.

    Raises:
        ConfigError, ValueError: as :func:`predict_probs`.
    """
    h, w = images.shape[-2:] if isinstance(images, torch.Tensor) else images.shape[:2]
    single_pass = cfg.mode == "whole" and not cfg.flip and _pass_sizes(model, h, w, cfg) == ((h, w), [(h, w)])
    if single_pass and model.output_kind == "logits" and model.decoder.output_stride > 1:
        cfg.validate()
        (x,), _ = _pass_inputs(model, images, cfg)
        with autocast(x.device, cfg.amp):
            return upsampled_argmax(model.decode(x), (h, w))
    return predict_probs(model, images, cfg).argmax(1)


def normalize_image(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 normalised with the presets' ImageNet mean/std."""
    return normalize(image).unsqueeze(0).to(device)


class Predictor:
    """Single-image inference in memory: raw RGB array (or path) in, (H, W) class map out.

    Args:
        model: a :class:`~semask.models.segmenter.Segmenter`.
        cfg: inference settings (whole/slide, TTA, amp).
        device: where to run.
    """

    def __init__(self, model: Segmenter, cfg: InferenceCfg | None = None, device: str = "cpu") -> None:
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
            (H, W) int64 class indices at the original size (test-time resizes on the uint8 image, as the
            official pipelines do).
        """
        return predict_labels(self.model, self._load(image), self.cfg)[0].cpu().numpy()

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
