"""SegFormer = MiT backbone + all-MLP head (official ``EncoderDecoder`` of NVlabs/SegFormer).

Official sources: ``mmseg/models/backbones/mix_transformer.py``, ``mmseg/models/decode_heads/segformer_head.py``
and ``mmseg/models/segmentors/encoder_decoder.py`` (``encode_decode``). Attributes ``backbone`` and
``decode_head`` mirror the official state_dict prefixes (the dead ``decode_head.conv_seg`` excepted).
"""

import torch
import torch.nn.functional as F
from torch import nn

from semask.backbones.mit import SeMaskMiT
from semask.backbones.swin import BackboneOutput
from semask.decoders.segformer_head import SegFormerHead
from semask.models.segmenter import SegOutput


class SegFormer(nn.Module):
    """Plain SegFormer segmenter; ``forward`` takes normalised (B, 3, H, W) images.

    The official training loss (``loss_seg``/``acc_seg``: CE mean over all pixels, ignored ones counting 0) is
    :func:`semask.losses.semask_fpn_loss` with ``prior_logits=None`` (its ``loss_ce``).

    Args:
        backbone: a plain MiT (:class:`SeMaskMiT` without semantic layers).
        decode_head: the head for ``backbone.channels``.

    Raises:
        ValueError: ``backbone`` has semantic layers (their prior maps need a prior decoder this model lacks).
    """

    def __init__(self, backbone: SeMaskMiT, decode_head: SegFormerHead) -> None:
        super().__init__()
        if backbone.semantic:
            raise ValueError("SegFormer takes a plain MiT backbone (semantic_attention=None)")
        self.backbone = backbone
        self.decode_head = decode_head

    @property
    def num_classes(self) -> int:
        return self.decode_head.linear_pred.out_channels

    def forward_features(self, images: torch.Tensor) -> BackboneOutput:
        """Backbone only: (B, 3, H, W) -> 4 x (B, C_s, h_s, w_s) features."""
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> SegOutput:
        """(B, 3, H, W) -> :class:`SegOutput` with logits (B, K, ceil(H/4), ceil(W/4)) and no prior logits."""
        return SegOutput(self.decode_head(self.backbone(images).features), None)

    def decode_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Whole-image logits before the final resize: (B, K, ceil(H/4), ceil(W/4))."""
        return self(images).logits

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Official ``encode_decode``: logits resized bilinearly (align_corners=False) to the input, (B, K, H, W)."""
        return F.interpolate(
            self.decode_logits(images), size=images.shape[-2:], mode="bilinear", align_corners=False
        )
