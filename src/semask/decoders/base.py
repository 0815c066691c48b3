"""What a decoder consumes and states about its output (the contract :class:`~semask.models.segmenter.Segmenter`
relies on; no family is recognised by ``hasattr``)."""

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

OutputKind = Literal["logits", "scores"]
"""What ``Segmenter.predict`` returns per class: ``logits`` (averaged after a softmax: the FPN and SegFormer heads)
or ``scores`` (already probabilities-like, averaged as they are: the mask-classification heads)."""

TestPipeline = Literal["mmseg", "detectron2"]
"""The official test pipeline and evaluator a decoder family follows (:mod:`semask.engine.inference`,
:mod:`semask.metrics`)."""


@dataclass
class SegOutput:
    """Output of a dense decoder (Semantic-FPN, SegFormer head), at stride 4 of the (unpadded) input.

    Attributes:
        logits: (B, K, ceil(H/4), ceil(W/4)) main decoder logits.
        prior_logits: (B, K', same size) prior-decoder logits, or ``None`` (no semantic layers, or not asked for).
    """

    logits: torch.Tensor
    prior_logits: torch.Tensor | None = None


class Decoder(nn.Module):
    """A head on the multi-scale backbone features: ``forward(features, aux=True) -> output`` with
    ``output.prior_logits`` (filled by the segmenter's prior decoder), and :meth:`dense` turning that output into
    per-class maps. ``aux=False`` asks only for what :meth:`dense` reads: the mask-classification heads then leave
    out the intermediate decoder layers' predictions (deep supervision), which only the training losses use.

    Class attributes:
        state_prefix: the attribute name under which the segmenter holds it, i.e. its state-dict prefix
            (``decode_head`` in mmseg checkpoints, ``sem_seg_head`` in detectron2 ones).
        output_kind: what :meth:`dense` returns (:data:`OutputKind`).
        output_stride: stride of :meth:`dense` relative to the input (4: logits resized to the input afterwards;
            1: already at the input size).
        test_pipeline: the official test pipeline and evaluator of the family.

    Attributes:
        in_channels: C_i of the backbone features it consumes (one per stage, strides 4 to 32).
        num_classes: K.
        size_divisibility: the input is padded bottom/right to a multiple of this (detectron2 ``ImageList``).
    """

    state_prefix: ClassVar[str] = "decode_head"
    output_kind: ClassVar[OutputKind] = "logits"
    output_stride: ClassVar[int] = 4
    test_pipeline: ClassVar[TestPipeline] = "mmseg"
    size_divisibility: int = 1

    def dense(self, outputs: Any, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, K, H/output_stride, W/output_stride) per-class maps of ``outputs`` for an (H, W) input."""
        raise NotImplementedError
