"""Semantic-FPN decoder with the parameter-free prior decoder (official ``BranchFPNHead``; SPEC 0 and A1).

Official source: ``SeMask-FPN/mmseg/models/decode_heads/branch_fpn_head.py``. There is NO FPN neck: each stage
has a scale head on the raw backbone features. Module names equal the official ``decode_head.*`` keys.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """mmcv ``ConvModule``: Conv 3x3 (no bias) -> BatchNorm2d -> ReLU, with kaiming(fan_out) conv init."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class Upsample2x(nn.Module):
    """Bilinear x2 upsampling, align_corners=False (mmseg ``Upsample``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _up2(x)


class SemanticFPNHead(nn.Module):
    """Per-stage scale heads summed at stride 4, Dropout2d, 1x1 classifier; plus the prior decoder.

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
        self.prior_steps = [int(math.log2(s // strides[0])) for s in strides]
        self.scale_heads = nn.ModuleList()
        for c_in, s in zip(in_channels, strides, strict=True):
            steps = max(1, self.prior_steps[len(self.scale_heads)])
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

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Args:
            features: 4 x (B, C_i, H/s_i, W/s_i).

        Returns:
            (B, K, h0, w0) logits at the stride-4 size of ``features[0]``.
        """
        out = self.scale_heads[0](features[0])
        for head, x in zip(self.scale_heads[1:], features[1:], strict=True):
            out = out + F.interpolate(head(x), size=out.shape[2:], mode="bilinear", align_corners=False)
        return self.conv_seg(self.dropout(out))

    def decode_priors(self, semantic_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Parameter-free prior decoder (official ``cls_scale_heads``).

        Stage i's map goes through log2(s_i/4) separate bilinear x2 steps, is resized to stage 0's size and
        summed (a single direct resize differs by 0.1-0.2, SPEC A1).

        Args:
            semantic_maps: 4 x (B, K, H/s_i, W/s_i) prior logits.

        Returns:
            (B, K, h0, w0).
        """
        out = semantic_maps[0]
        for steps, x in zip(self.prior_steps[1:], semantic_maps[1:], strict=True):
            for _ in range(steps):
                x = _up2(x)
            out = out + F.interpolate(x, size=out.shape[2:], mode="bilinear", align_corners=False)
        return out
