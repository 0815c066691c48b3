"""ResNet-50/101 (He et al. 2016) as the MMSegmentation MaskFormer configs use it: mmseg ``ResNet`` with
``deep_stem=False``, ``style='pytorch'``, ``avg_down=False``, strides (1, 2, 2, 2), dilations 1 (output stride 32,
"D32"), all four stages out, ``norm_eval=True``.

Official sources: mmseg 1.2.2 ``mmseg/models/backbones/resnet.py`` (``ResNet``, ``Bottleneck``) and torchvision
``models/resnet.py`` (whose key names both use: ``conv1``, ``bn1``, ``layer{1..4}.{i}.conv{1,2,3}``,
``bn{1,2,3}``, ``downsample.{0,1}``; no ``fc`` here). Details reproduced (``tests/test_parity_mmseg_maskformer.py``):

- stem: Conv 7x7 stride 2 padding 3 (no bias), BN, ReLU, MaxPool 3 stride 2 padding 1;
- Bottleneck (expansion 4): 1x1 -> 3x3 (the stride is on the 3x3 conv: 'pytorch' style) -> 1x1, BN after each,
  ReLU after the first two and after the residual sum; the first block of a stage has ``downsample`` =
  Conv 1x1 with the stage stride (no bias) + BN;
- ``norm_eval``: in ``train()`` every BatchNorm goes back to eval mode (running statistics), its affine
  parameters stay trainable. Under DDP the engine swaps BN for synchronised BN (:mod:`semask.engine.sync_bn`);
  with ``norm_eval`` those also run on their running statistics.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semask.backbones.base import Backbone, BackboneOutput
from semask.layers.winograd import WinogradConv2d
from semask.registry import BACKBONES, register_part

RESNET_DEPTHS: dict[int, tuple[int, ...]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
"""Bottleneck blocks per stage of ResNet-50 and ResNet-101."""

EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 (planes) -> 3x3 (planes, stride) -> 1x1 (4 planes), BN after each, identity or projected shortcut.

    Args:
        inplanes: input channels; planes: bottleneck width (output 4 * planes); stride: of the 3x3 conv and
            of the projection; downsample: build the 1x1 projection shortcut (``downsample.{0,1}``).
    """

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = WinogradConv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(inplanes, planes * EXPANSION, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * EXPANSION),
            )
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inplanes, H, W) -> (B, 4 planes, ceil(H/stride), ceil(W/stride))."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet(Backbone):
    """ResNet with four bottleneck stages at strides 4, 8, 16, 32 (no classifier).

    Args:
        depths: blocks per stage (:data:`RESNET_DEPTHS`: (3, 4, 6, 3) is ResNet-50, (3, 4, 23, 3) ResNet-101).
        stem_channels: channels of the 7x7 stem conv (64).
        base_channels: bottleneck width of stage 0 (64); stage i has width ``base * 2**i`` and outputs
            ``4 * base * 2**i`` channels.
        norm_eval: keep every BatchNorm in eval mode while training (frozen statistics, mmseg ``norm_eval``).

    Raises:
        ValueError: ``depths`` without 4 entries.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 4, 6, 3),
        stem_channels: int = 64,
        base_channels: int = 64,
        norm_eval: bool = True,
    ) -> None:
        super().__init__()
        if len(depths) != 4:
            raise ValueError(f"depths needs 4 entries (one per stage), got {depths!r}")
        self.norm_eval = norm_eval
        self.channels = [base_channels * 2**i * EXPANSION for i in range(4)]
        self.strides = [4, 8, 16, 32]
        self.semantic = False
        self.conv1 = nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        inplanes = stem_channels
        for i, depth in enumerate(depths):
            planes, stride = base_channels * 2**i, 1 if i == 0 else 2
            blocks = [Bottleneck(inplanes, planes, stride, downsample=True)]
            inplanes = planes * EXPANSION
            blocks += [Bottleneck(inplanes, planes, 1, downsample=False) for _ in range(depth - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def train(self, mode: bool = True) -> "ResNet":
        """Set the training mode; with ``norm_eval`` every BatchNorm stays in eval mode (running statistics)."""
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Args:
            x: (B, 3, H, W) normalised images, any H and W.

        Returns:
            :class:`~semask.backbones.base.BackboneOutput`: features 4 x (B, C_i, h_i, w_i) after stages 1-4,
            h_0 = ceil(ceil(H/2)/2), then h_i = ceil(h_{i-1}/2); no semantic maps.
        """
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        features = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            features.append(x)
        return BackboneOutput(features)


@dataclass
class ResNetConfig:
    """The :class:`ResNet` fields of a model config (registered backbone ``resnet``; defaults ResNet-50)."""

    depths: tuple[int, ...] = (3, 4, 6, 3)
    stem_channels: int = 64
    base_channels: int = 64
    norm_eval: bool = True


@register_part(BACKBONES, "resnet", ResNetConfig)
def build_resnet(cfg: ResNetConfig, num_classes: int) -> ResNet:
    """``ResNet`` from ``cfg`` (``num_classes`` is unused: ResNet has no semantic layers)."""
    return ResNet(cfg.depths, cfg.stem_channels, cfg.base_channels, cfg.norm_eval)
