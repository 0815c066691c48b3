"""mmcv ``ConvModule`` (conv + BatchNorm + ReLU) as the mmseg heads use it (3x3 convs train by Winograd where
:func:`semask.layers.winograd.use_winograd` says so)."""

import torch
from torch import nn

from semask.layers.winograd import WinogradConv2d


class ConvBNReLU(nn.Module):
    """mmcv ``ConvModule``: Conv k x k (no bias, 'same' padding) -> BatchNorm2d -> ReLU, with kaiming(fan_out)
    conv init (k = 3 in the FPN scale heads, 1 in SegFormer's ``linear_fuse``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = WinogradConv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        return self.activate(self.bn(self.conv(x)))
