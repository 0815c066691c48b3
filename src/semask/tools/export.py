"""ONNX export of whole-image inference: normalised images in, full-resolution per-class logits out.

The graph is ``model.predict`` traced by ``torch.onnx.export``'s TorchScript exporter with dynamic batch,
height and width: official ``encode_decode`` for Semantic-FPN models, and for the mask-classification models
(Mask2Former, MaskFormer, FaPN and MSFaPN Mask2Former) pad to 32 -> head -> official ``semantic_inference`` ->
crop, whose per-class scores (not logits; same argmax) take the ``logits`` output. MSDeformAttn and DCNv2 sample
with ``grid_sample`` (ONNX ``GridSample``, opset >= 16). Tracing runs the ``reference`` attention (explicit matmul
+ softmax, no cached tensors), pads to window multiples unconditionally and derives every size with non-negative
integer ops (:mod:`semask.layers.windows`), so one graph serves every input size. (The ``torch.export`` based
exporter needed minutes of symbolic-shape work for the 8-block test model; the TorchScript one takes about a
second.)
"""

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from semask.errors import ConfigError
from semask.layers.impl import use_impl


class FullResLogits(nn.Module):
    """Wraps a segmenter so ``forward`` is ``predict``: (B, 3, H, W) -> (B, K, H, W) logits (mask models:
    scores)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.predict(images)


def export_onnx(
    model: nn.Module, path: str | Path, size: tuple[int, int] = (512, 512), opset: int | None = None
) -> Path:
    """Write ``model`` as an ONNX graph with input ``images`` (B, 3, H, W) and output ``logits`` (B, K, H, W).

    Args:
        model: a :class:`~semask.models.segmenter.Segmenter` (any backbone and decoder); it is put in
            eval mode and moved to CPU fp32.
        path: the ``.onnx`` file to write (weights embedded).
        size: (H, W) in pixels of the example input used for tracing; the graph accepts any size.
        opset: ONNX opset (default 17; at least 16 for the mask-classification models' ``GridSample``).

    Returns:
        ``path``.

    Raises:
        ConfigError: ``onnx`` is missing (install ``semask[onnx]``), or a bad size.
    """
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'semask[onnx]'") from None
    if min(size) < 1:
        raise ConfigError(f"export size must be positive, got {size}")
    path = Path(path)
    wrapper = FullResLogits(model.cpu().float()).eval()
    example = torch.randn(1, 3, *size)
    axes = {0: "batch", 2: "height", 3: "width"}
    with use_impl("reference"), torch.no_grad(), warnings.catch_warnings():
        # the legacy exporter's deprecation notice, and tracer warnings on size arithmetic (checked by the tests)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            path,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": axes, "logits": axes},
            opset_version=opset or 17,
            dynamo=False,
        )
    return path


def onnx_max_rel_diff(
    path: str | Path, model: nn.Module, images: torch.Tensor | Sequence[torch.Tensor]
) -> float:
    """Compare onnxruntime with PyTorch (``reference`` impl) on ``images``.

    Args:
        path: an ONNX file from :func:`export_onnx`.
        model: the PyTorch segmenter it was exported from.
        images: (B, 3, H, W) normalised fp32 images, or several such batches (any sizes; one onnxruntime
            session serves them all).

    Returns:
        max|ort - torch| / max(1, max|torch|) over the (B, K, H, W) logits (mask models: scores); with several
        batches, the largest of their values.

    Raises:
        ConfigError: onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("checking an export needs onnxruntime: pip install 'semask[onnx]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs = []
    for batch in [images] if isinstance(images, torch.Tensor) else images:
        (ours,) = session.run(["logits"], {"images": batch.cpu().numpy()})
        with use_impl("reference"), torch.no_grad():
            ref = model.eval().cpu().predict(batch.cpu())
        diffs.append(float((torch.from_numpy(ours) - ref).abs().max() / max(1.0, float(ref.abs().max()))))
    return max(diffs)
