"""FaPN pixel decoders of SeMask-FAPN: feature-aligned FPN (FaPN) and MSDeformAttn + one aligned level (MSFaPN)
(SPEC A7 'FaPN pixel decoder', 'MSFaPN pixel decoder', 'Shared GroupNorm', 'DCNv2').

Official source: ``SeMask-FAPN/SeMask-Mask2Former/mask2former/modeling/pixel_decoder/{fapn,msfapn}.py``
(``FeatureAlign_V2`` without its feature-selection module, ``PixelFANDecoder``, ``MSDeformAttnPixelFANDecoder``).
Module names equal the official keys under ``sem_seg_head.pixel_decoder``. ``align_k.offset.norm`` IS
``layer_k.norm`` (one module under two names, as officially): the state dict holds the tensor under both keys,
``parameters()`` yields it once.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semask.decoders.maskformer.common import Conv2dNorm, PixelDecoderOutput
from semask.decoders.maskformer.maskformer import BasePixelDecoder
from semask.decoders.maskformer.pixel_decoder import MSDeformAttnPixelDecoder
from semask.layers.dcn import DCN


class FeatureAlign(nn.Module):
    """Aligns the upsampled coarse map to the lateral one with a DCNv2 whose offsets come from both.

    offset = GN(conv1x1(cat[lateral, 2 * top])) (keys ``offset.*``), out = ReLU(DCN(top, offset)) + lateral
    (keys ``dcpack_L2.*``: 3x3, 8 deformable groups).

    Args:
        channels: width C of both inputs.
        norm: the GroupNorm of the offset conv, shared with the level's output conv ``layer_k``.
        deformable_groups: DCN groups (8 officially).
    """

    def __init__(self, channels: int, norm: nn.GroupNorm, deformable_groups: int = 8) -> None:
        super().__init__()
        self.offset = Conv2dNorm(2 * channels, channels, 1, relu=False)
        self.offset.norm = norm
        self.dcpack_L2 = DCN(channels, channels, 3, deformable_groups)

    def forward(self, lateral: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """Args:
            lateral: (B, C, H, W) the level's adapted backbone features (``feat_l``).
            top: (B, C, H, W) the coarser level already upsampled to (H, W) and added to ``lateral`` (``feat_s``;
                the official resize of ``feat_s`` never triggers in the decoders, whose inputs match in size).

        Returns:
            (B, C, H, W).
        """
        offset = self.offset(torch.cat([lateral, 2 * top], dim=1))
        return F.relu(self.dcpack_L2(top, offset)) + lateral


class PixelFANDecoder(BasePixelDecoder):
    """FaPN: the MaskFormer FPN whose top-down merges go through :class:`FeatureAlign`.

    res5 -> ``layer_4``; for res4, res3, res2 (k = 3, 2, 1): y = layer_k(align_k(a, a + nearest-up(y))) with
    a = adapter_k(x); ``mask_features`` = 3x3 conv on the stride-4 level. The levels at strides 32, 16, 8 are the
    multi-scale features of the masked-attention decoder.

    Args:
        in_channels: backbone channels of res2..res5.
        conv_dim: FPN width (CONVS_DIM, divisible by 32 and by 8 deformable groups); mask_dim: MASK_DIM.
    """

    def __init__(self, in_channels: Sequence[int], conv_dim: int = 256, mask_dim: int = 256) -> None:
        super().__init__(in_channels, conv_dim, mask_dim)
        for k in (1, 2, 3):
            self.add_module(f"align_{k}", FeatureAlign(conv_dim, getattr(self, f"layer_{k}").norm))

    def forward(self, features: list[torch.Tensor]) -> PixelDecoderOutput:
        """features: res2..res5 (B, C_i, H/s, W/s) -> :class:`PixelDecoderOutput` with ``multi_scale_features``
        at strides 32, 16, 8."""
        levels = [self.layer_4(features[3])]
        for k in (3, 2, 1):
            lateral = getattr(self, f"adapter_{k}")(features[k - 1])
            top = lateral + F.interpolate(levels[-1], size=lateral.shape[-2:], mode="nearest")
            levels.append(getattr(self, f"layer_{k}")(getattr(self, f"align_{k}")(lateral, top)))
        return PixelDecoderOutput(self.mask_features(levels[-1]), levels[-1], levels[:3])


class MSDeformAttnPixelFANDecoder(MSDeformAttnPixelDecoder):
    """MSFaPN: :class:`MSDeformAttnPixelDecoder` whose stride-4 level is feature-aligned.

    y = layer_1(align_1(a, a + bilinear-up(res3 level))) with a = adapter_1(res2) (align_corners=False);
    ``mask_features`` = 1x1 conv. Arguments as :class:`MSDeformAttnPixelDecoder`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.align_1 = FeatureAlign(self.layer_1.out_channels, self.layer_1.norm)

    def forward(self, features: list[torch.Tensor]) -> PixelDecoderOutput:
        """features: res2..res5 -> :class:`PixelDecoderOutput` with ``multi_scale_features`` at strides 32, 16, 8
        (the encoder outputs)."""
        out = self.encode(features)
        lateral = self.adapter_1(features[0])
        top = lateral + F.interpolate(out[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        y = self.layer_1(self.align_1(lateral, top))
        return PixelDecoderOutput(self.mask_features(y), y, out)
