"""What every backbone returns and states about itself (the contract the decoders consume)."""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BackboneOutput:
    """Backbone outputs, stage i at stride ``strides[i]`` relative to the input image (4, 8, 16, 32 for Swin and
    MiT).

    Attributes:
        features: 4 x (B, C_i, ceil(H/s_i), ceil(W/s_i)), after the output norms.
        semantic_maps: 4 x (B, K, same sizes) semantic-prior logits, or ``None`` without semantic layers.
    """

    features: list[torch.Tensor]
    semantic_maps: list[torch.Tensor] | None = None


class Backbone(nn.Module):
    """A multi-scale encoder: ``forward((B, 3, H, W)) -> BackboneOutput``.

    Attributes:
        channels: C_i of each returned feature map.
        strides: s_i of each returned feature map relative to the input, in pixels.
        semantic: whether ``semantic_maps`` are returned (SeMask semantic layers), so a prior decoder applies.
    """

    channels: list[int]
    strides: list[int]
    semantic: bool


def init_transformer_weights(m: nn.Module) -> None:
    """mmseg-path init (SPEC A2): every Linear trunc_normal(0.02) with bias 0, LayerNorm 1/0; gamma stays 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
