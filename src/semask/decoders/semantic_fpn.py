"""Semantic-FPN decoder with the parameter-free prior decoder (official ``BranchFPNHead``; SPEC 0 and A1).

Official source: ``SeMask-FPN/mmseg/models/decode_heads/branch_fpn_head.py``. There is NO FPN neck: each stage
has a scale head on the raw backbone features. Module names equal the official ``decode_head.*`` keys.
"""

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semask.layers.impl import get_impl
from semask.layers.onednn import fused_conv_bn_relu


class ConvBNReLU(nn.Module):
    """mmcv ``ConvModule``: Conv k x k (no bias, 'same' padding) -> BatchNorm2d -> ReLU, with kaiming(fan_out)
    conv init (k = 3 in the FPN scale heads, 1 in SegFormer's ``linear_fuse``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W); one fused kernel where :func:`fused_conv_bn_relu` applies."""
        y = fused_conv_bn_relu(x, self.conv, self.bn)
        return self.activate(self.bn(self.conv(x))) if y is None else y


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def resize_to(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, C, h, w) to ``size``. ``fast`` skips a resize to the same size
    (an exact identity: every output pixel samples its own source pixel); ``reference`` runs it as the official
    code does."""
    if x.shape[-2:] == size and get_impl() == "fast":
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


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
        heads = list(zip(self.scale_heads[1:], features[1:], strict=True))
        if get_impl() == "reference":
            for head, x in heads:
                out = out + resize_to(head(x), out.shape[2:])
            return self.conv_seg(self.dropout(out))
        # fast: heads 1-3 end in Upsample2x, and bilinear resizing is linear, so the maps before it are summed
        # first where their sizes agree: one x2 upsampling (and one add at stride 4) instead of three
        low = [head[:-1](x) for head, x in heads]  # (B, channels, 2*h0', 2*w0') each, before the last x2
        if all(t.shape == low[0].shape for t in low):
            low = [functools.reduce(torch.add, low)]
        for t in low:
            out = out + resize_to(_up2(t), out.shape[2:])
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
            out = out + resize_to(x, out.shape[2:])
        return out
