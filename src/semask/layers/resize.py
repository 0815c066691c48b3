"""Bilinear resizes of the mmseg heads (align_corners=False), with the ``fast`` skip of identity resizes."""

import torch
import torch.nn.functional as F

from semask.layers.impl import get_impl


def up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling of (B, C, h, w), align_corners=False (mmseg ``Upsample``)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def resize_to(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, C, h, w) to ``size``. ``fast`` skips a resize to the same size
    (an exact identity: every output pixel samples its own source pixel); ``reference`` runs it as the official
    code does."""
    if tuple(x.shape[-2:]) == tuple(size) and get_impl() == "fast":
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
