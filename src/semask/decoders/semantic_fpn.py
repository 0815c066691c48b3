"""Semantic-FPN decoder with the parameter-free prior decoder (official ``BranchFPNHead``; SPEC 0 and A1).

Official source: ``SeMask-FPN/mmseg/models/decode_heads/branch_fpn_head.py``. There is NO FPN neck: each stage
has a scale head on the raw backbone features. Module names equal the official ``decode_head.*`` keys.
"""

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from semask.decoders.base import Decoder, SegOutput
from semask.decoders.priors import FPNPriorDecoder
from semask.layers.conv import ConvBNReLU
from semask.layers.impl import get_impl
from semask.layers.resize import resize_to, up2
from semask.losses.fpn import SemanticCELoss
from semask.registry import DECODERS, register_part


class Upsample2x(nn.Module):
    """Bilinear x2 upsampling, align_corners=False (mmseg ``Upsample``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return up2(x)


class SemanticFPNHead(Decoder):
    """Per-stage scale heads summed at stride 4, Dropout2d, 1x1 classifier.

    ``scale_heads[i]`` repeats max(1, log2(s_i/4)) x [ConvBNReLU, Upsample2x (when s_i != 4)].

    Args:
        in_channels: C_i of the 4 backbone stages.
        num_classes: K of the segmentation head.
        channels: decoder width (official 256).
        dropout: Dropout2d before ``conv_seg`` (official 0.1).
        strides: feature strides relative to the input image.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        dropout: float = 0.1,
        strides: Sequence[int] = (4, 8, 16, 32),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        steps_of = [int(math.log2(s // strides[0])) for s in strides]
        self.scale_heads = nn.ModuleList()
        for c_in, s in zip(in_channels, strides, strict=True):
            steps = max(1, steps_of[len(self.scale_heads)])
            layers: list[nn.Module] = []
            for k in range(steps):
                layers.append(ConvBNReLU(c_in if k == 0 else channels, channels))
                if s != strides[0]:
                    layers.append(Upsample2x())
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, features: Sequence[torch.Tensor], aux: bool = True) -> SegOutput:
        """Args:
            aux: unused (no intermediate predictions).
            features: 4 x (B, C_i, H/s_i, W/s_i).

        Returns:
            :class:`SegOutput` with (B, K, h0, w0) logits at the stride-4 size of ``features[0]``.
        """
        out = sum_scale_heads(self.scale_heads, features)
        return SegOutput(self.conv_seg(self.dropout(out)))

    def dense(self, outputs: SegOutput, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, K, h0, w0) logits at stride 4."""
        return outputs.logits


def sum_scale_heads(heads: nn.ModuleList, features: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_i resize(scale_heads[i](features[i])) at stage 0's size: (B, channels, h0, w0).

    ``reference`` runs each head as the official code does. ``fast``: heads 1-3 end in Upsample2x, and bilinear
    resizing is linear, so the maps before it are summed first where their sizes agree: one x2 upsampling (and one
    add at stride 4) instead of three.
    """
    out = heads[0](features[0])
    pairs = list(zip(heads[1:], features[1:], strict=True))
    if get_impl() == "reference":
        for head, x in pairs:
            out = out + resize_to(head(x), out.shape[2:])
        return out
    low = [head[:-1](x) for head, x in pairs]  # (B, channels, 2*h0', 2*w0') each, before the last x2
    if all(t.shape == low[0].shape for t in low):
        low = [functools.reduce(torch.add, low)]
    for t in low:
        out = out + resize_to(up2(t), out.shape[2:])
    return out


@dataclass
class SemanticFPNConfig:
    """Semantic-FPN decoder fields: ``decoder_channels`` (official 256), ``dropout`` before ``conv_seg`` (0.1)."""

    decoder_channels: int = 256
    dropout: float = 0.1


@register_part(DECODERS, "semantic_fpn", SemanticFPNConfig)
def build_semantic_fpn(
    cfg: SemanticFPNConfig, channels: Sequence[int], strides: Sequence[int], num_classes: int
):
    """(decoder, criterion, prior decoder) of SeMask-FPN (official ``BranchFPNHead``)."""
    head = SemanticFPNHead(channels, num_classes, cfg.decoder_channels, cfg.dropout, strides)
    return head, SemanticCELoss(), FPNPriorDecoder(strides)
