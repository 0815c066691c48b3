"""mmdet ``PixelDecoder``: the FPN pixel decoder of the MMSegmentation MaskFormer configs (no transformer encoder;
the "upernet" in the Swin config names is a misnomer).

Official source: mmdet 3.3.0 ``mmdet/models/layers/pixel_decoder.py`` (``PixelDecoder``) with mmcv ``ConvModule``
(``conv`` + ``gn`` [+ ReLU], no conv bias under a norm). Module names equal the keys under
``decode_head.pixel_decoder``. The maths equals detectron2's ``BasePixelDecoder``
(:class:`~semask.decoders.maskformer.maskformer.BasePixelDecoder`); the key layout does not.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semask.decoders.maskformer.common import c2_xavier_fill
from semask.layers.winograd import WinogradConv2d


class ConvGN(nn.Module):
    """mmcv ``ConvModule(norm_cfg=GN(32))``: Conv k x k ('same' padding, no bias) -> GroupNorm(32) [-> ReLU].

    Keys ``conv.weight``, ``gn.weight``, ``gn.bias``; the conv gets caffe2 xavier init (mmdet ``init_weights``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, relu: bool) -> None:
        super().__init__()
        self.conv = WinogradConv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.gn = nn.GroupNorm(32, out_channels)
        self.relu = relu
        c2_xavier_fill(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        x = self.gn(self.conv(x))
        return F.relu(x) if self.relu else x


class PixelDecoder(nn.Module):
    """y = last_feat_conv(x_3); for i = 2, 1, 0: y = output_convs[i](lateral_convs[i](x_i) + nearest-up(y));
    mask_features = mask_feature(y) (3x3 conv with bias, stride 4); memory = the raw x_3.

    Args:
        in_channels: channels of the 4 backbone features (strides 4 to 32).
        feat_channels: FPN width; out_channels: mask-feature channels.
    """

    def __init__(self, in_channels: Sequence[int], feat_channels: int = 256, out_channels: int = 256) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvGN(c, feat_channels, 1, relu=False) for c in in_channels[:-1])
        self.output_convs = nn.ModuleList(
            ConvGN(feat_channels, feat_channels, 3, relu=True) for _ in in_channels[:-1]
        )
        self.last_feat_conv = ConvGN(in_channels[-1], feat_channels, 3, relu=True)
        self.mask_feature = WinogradConv2d(feat_channels, out_channels, 3, padding=1)
        c2_xavier_fill(self.mask_feature)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Args:
            features: 4 x (B, C_i, H/s_i, W/s_i), strides 4, 8, 16, 32.

        Returns:
            ``(levels, memory)``: levels = [last_feat_conv out (stride 32), output_convs 2, 1, 0 outs (strides 16,
            8, 4), mask features (B, out_channels, H/4, W/4)]; memory = ``features[-1]`` unchanged.
        """
        y = self.last_feat_conv(features[-1])
        levels = [y]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral_convs[i](features[i])
            y = self.output_convs[i](lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest"))
            levels.append(y)
        levels.append(self.mask_feature(y))
        return levels, features[-1]
