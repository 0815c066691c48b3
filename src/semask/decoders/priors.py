"""The two parameter-free SeMask prior decoders: the semantic-prior maps of the four stages summed at stride 4
(paper Sec. 3.2; what ``loss_cate`` supervises).

Official sources: SeMask-FPN ``BranchFPNHead.cls_scale_heads`` (:class:`FPNPriorDecoder`) and the SeMask
detectron2 projects' ``SemanticHead`` (:class:`D2PriorDecoder`, align_corners=True everywhere; SPEC A7).
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semask.layers.resize import resize_to, up2


class FPNPriorDecoder(nn.Module):
    """Stage i's map goes through log2(s_i/4) separate bilinear x2 steps (align_corners=False), is resized to stage
    0's size and summed (a single direct resize differs by 0.1-0.2, SPEC A1).

    Args:
        strides: the backbone strides (4, 8, 16, 32).
    """

    def __init__(self, strides: Sequence[int]) -> None:
        super().__init__()
        self.steps = [int(math.log2(s // strides[0])) for s in strides]

    def forward(self, semantic_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """4 x (B, K, H/s_i, W/s_i) prior logits -> (B, K, h0, w0) at stage 0's size (stride 4)."""
        out = semantic_maps[0]
        for steps, x in zip(self.steps[1:], semantic_maps[1:], strict=True):
            for _ in range(steps):
                x = up2(x)
            out = out + resize_to(x, out.shape[2:])
        return out


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class D2PriorDecoder(nn.Module):
    """Sum of the four stage priors at stride 4, then x4 to the padded input size (all bilinear,
    align_corners=True). Stage s (s = 1, 2, 3 for strides 8, 16, 32) goes through s separate x2 upsamplings
    (official ``nn.Upsample(scale_factor=2)`` chain, not one resize), then is resized to stage 0's size (an
    identity for inputs padded to 32) and added."""

    def forward(self, semantic_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """4 x (B, K, h_s, w_s) prior logits (strides 4, 8, 16, 32) -> (B, K, 4*h_0, 4*w_0)."""
        y = semantic_maps[0]
        size = tuple(y.shape[-2:])
        for s, m in enumerate(semantic_maps[1:], start=1):
            for _ in range(s):
                m = _resize(m, (2 * m.shape[-2], 2 * m.shape[-1]))
            y = y + _resize(m, size)
        return _resize(y, (4 * size[0], 4 * size[1]))
