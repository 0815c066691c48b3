"""The all-MLP SegFormer decoder (official ``SegFormerHead``).

Official source: NVlabs/SegFormer ``mmseg/models/decode_heads/segformer_head.py`` (commit ``65fa8cf``). Module
names equal its ``decode_head.*`` keys, except that the official ``conv_seg`` (created by mmseg's
``BaseDecodeHead``, never used by ``SegFormerHead.forward``) does not exist here: converters drop it.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semask.decoders.base import Decoder, SegOutput
from semask.decoders.priors import FPNPriorDecoder
from semask.layers.conv import ConvBNReLU
from semask.layers.impl import get_impl
from semask.layers.resize import add_resized, resize_to, slow_in_place
from semask.losses.fpn import SemanticCELoss
from semask.registry import DECODERS, register_part


class MLP(nn.Module):
    """Per-pixel Linear(C_in, E) on a map (official ``MLP``: flatten, ``proj``, reshape back)."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, h, w) -> (B, E, h, w) (channels-last memory)."""
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SegFormerHead(Decoder):
    """Project each stage to E channels, resize to stride 4, concat [c4, c3, c2, c1], fuse, classify.

    ``linear_c{i}`` = Linear(C_i, E) per pixel; c4, c3, c2 are resized bilinearly (align_corners=False, fixed in
    the official forward whatever the config says) to the size of c1; ``linear_fuse`` = Conv 1x1 4E -> E, BN,
    ReLU; Dropout2d; ``linear_pred`` = Conv 1x1 E -> K (bias). Linear and ``linear_pred`` keep PyTorch's default
    init, as the official head.

    Args:
        in_channels: C_i of the 4 backbone stages.
        num_classes: K.
        embed_dim: E (official 256 for B0/B1, 768 for B2-B5).
        dropout: Dropout2d before ``linear_pred`` (official 0.1).
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, embed_dim: int = 256, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        if len(in_channels) != 4:
            raise ValueError(f"in_channels needs 4 entries (one per stage), got {in_channels!r}")
        for i, c in enumerate(in_channels, start=1):
            self.add_module(f"linear_c{i}", MLP(c, embed_dim))
        self.linear_fuse = ConvBNReLU(4 * embed_dim, embed_dim, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor], aux: bool = True) -> SegOutput:
        """Args:
            aux: unused (no intermediate predictions).
            features: 4 x (B, C_i, h_i, w_i), stage 0 at stride 4.

        Returns:
            :class:`SegOutput` with (B, K, h_0, w_0) logits.
        """
        if get_impl() == "fast":
            fused = self._fuse_per_stage(features)
        else:
            size = features[0].shape[2:]
            maps = [
                getattr(self, f"linear_c{i}")(x) for i, x in enumerate(features, start=1)
            ]  # (B, E, h_i, w_i)
            fused = torch.cat(
                [resize_to(m, size) for m in maps[:0:-1]] + [maps[0]], dim=1
            )  # (B, 4E, h_0, w_0)
            fused = self.linear_fuse(fused)
        return SegOutput(self.linear_pred(self.dropout(fused)))

    def _fuse_per_stage(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``linear_fuse(cat(resized maps))`` without the 4E-channel concat: the fuse conv is 1x1 and the resize
        bilinear, both linear per pixel, so stage i's slice of the conv composed with ``linear_c{i}`` is applied at
        the stage's own size, then resized, and the four are summed (eval: the BatchNorm folded in too); a resize keeps
        constants (each bilinear row sums to 1), so the four biases are added once, to stage 4's map. The same math
        as the official head, summed in another order; (B, E, h_0, w_0)."""
        conv, bn = self.linear_fuse.conv, self.linear_fuse.bn
        e = conv.out_channels
        weight, bias = (
            conv.weight[:, :, 0, 0],
            torch.zeros(e, device=conv.weight.device),
        )  # (E, 4E): c4, c3, c2, c1
        if not bn.training:
            scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
            weight, bias = weight * scale[:, None], bn.bias - bn.running_mean * scale
        weights = []  # (E, C_i) per stage
        for i in range(1, 5):
            proj = getattr(self, f"linear_c{i}").proj
            part = weight[:, (4 - i) * e : (5 - i) * e]  # (E, E)
            weights.append(part @ proj.weight)
            bias = bias + part @ proj.bias
        maps = [
            F.linear(x.permute(0, 2, 3, 1), w, bias if i == 3 else None).permute(0, 3, 1, 2)
            for i, (x, w) in enumerate(zip(features, weights, strict=True))
        ]  # (B, E, h_i, w_i), channels-last; the summed bias once, on the smallest map
        fused = add_resized(maps[0], maps[1:])
        fused = fused if not bn.training else bn(fused)
        return F.relu(fused) if slow_in_place(fused) else self.linear_fuse.activate(fused)

    def dense(self, outputs: SegOutput, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, K, h_0, w_0) logits at stride 4."""
        return outputs.logits


@dataclass
class SegFormerHeadConfig:
    """SegFormer head fields: ``decoder_channels`` E (official 256 for B0/B1, 768 for B2-B5), ``dropout`` (0.1)."""

    decoder_channels: int = 256
    dropout: float = 0.1


@register_part(DECODERS, "segformer_head", SegFormerHeadConfig)
def build_segformer_head(
    cfg: SegFormerHeadConfig, channels: Sequence[int], strides: Sequence[int], num_classes: int
):
    """(decoder, criterion, prior decoder): the official head, the CE loss (``loss_seg`` = our ``loss_ce``), and
    the FPN-style prior decoder for SeMask-MiT."""
    head = SegFormerHead(channels, num_classes, cfg.decoder_channels, cfg.dropout)
    return head, SemanticCELoss(), FPNPriorDecoder(strides)
