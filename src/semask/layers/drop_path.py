"""Stochastic depth (drop path), as in the official Swin-Seg code (timm semantics)."""

import torch
from torch import nn


class DropPath(nn.Module):
    """Drop whole residual branches per sample with probability ``drop_prob`` while training.

    Args:
        drop_prob: probability of dropping the branch of a sample; kept samples are scaled by 1/(1-p).
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
