"""Building blocks shared by the Mask2Former and MaskFormer heads (SPEC A7).

Official sources: detectron2 ``layers/wrappers.py`` (``Conv2d`` with ``norm``/``activation``),
``fvcore.nn.weight_init.c2_xavier_fill``, Mask2Former ``transformer_decoder/*.py`` (``MLP``, output dicts).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semask.layers.mask_product import mask_product
from semask.layers.winograd import WinogradConv2d


@dataclass
class MaskPrediction:
    """One set of query predictions.

    Attributes:
        pred_logits: (B, Q, K+1) class logits, the last column is "no object".
        pred_masks: (B, Q, h, w) mask logits at the mask-feature resolution (stride 4 of the padded input).
    """

    pred_logits: torch.Tensor
    pred_masks: torch.Tensor


@dataclass
class PredictorOutput(MaskPrediction):
    """Final prediction plus deep supervision.

    Attributes:
        aux_outputs: intermediate predictions, first to last (Mask2Former: index 0 is the prediction from the
            learnable queries before any decoder layer).
        attn_masks: Mask2Former only, per decoder layer l: (B, Q, h_l*w_l) bool memory mask that layer l's
            cross-attention received (True = not attended), after the "fully masked row" fix; empty otherwise.
    """

    aux_outputs: list[MaskPrediction]
    attn_masks: list[torch.Tensor]


@dataclass
class MaskSegOutput(PredictorOutput):
    """Outputs on the input padded to ``size_divisibility`` (Hp, Wp).

    Attributes (besides :class:`PredictorOutput`'s ``pred_logits`` (B, Q, K+1), ``pred_masks``
    (B, Q, Hp/4, Wp/4), ``aux_outputs``, ``attn_masks``):
        prior_logits: (B, K, Hp, Wp) prior-decoder logits (input of ``loss_cate``), None without semantic layers.
    """

    prior_logits: torch.Tensor | None = None


@dataclass
class PixelDecoderOutput:
    """Pixel-decoder outputs.

    Attributes:
        mask_features: (B, mask_dim, H/4, W/4) per-pixel embeddings the queries are dotted with.
        fpn_res2: (B, conv_dim, H/4, W/4) the stride-4 FPN level (output of ``layer_1``).
        multi_scale_features: Mask2Former: 3 x (B, conv_dim, H/s, W/s) for s = 32, 16, 8; MaskFormer: None.
    """

    mask_features: torch.Tensor
    fpn_res2: torch.Tensor
    multi_scale_features: list[torch.Tensor] | None


def c2_xavier_fill(module: nn.Module) -> None:
    """fvcore ``c2_xavier_fill``: kaiming_uniform(a=1) weight, zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def xavier_matrices(module: nn.Module) -> None:
    """xavier_uniform on every parameter with more than one dimension (official ``_reset_parameters``)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class Conv2dNorm(WinogradConv2d):
    """detectron2 ``Conv2d``: convolution, then GroupNorm(32) as attribute ``norm``, then optional ReLU.

    Keys are ``weight`` [, ``bias``], ``norm.weight``, ``norm.bias``, as in the official state dicts.

    Args:
        in_channels, out_channels: channels; kernel_size: square kernel (padding kernel_size // 2).
        relu: apply ReLU after the norm.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, relu: bool) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(32, out_channels)
        self.relu = relu
        c2_xavier_fill(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        x = self.norm(super().forward(x))
        return F.relu(x) if self.relu else x


class MLP(nn.Module):
    """``num_layers`` Linears with ReLU between them (official ``MLP``, keys ``layers.{i}``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(d, o) for d, o in zip(dims, dims[1:] + [out_dim], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def predict_masks(
    queries: torch.Tensor,
    mask_features: torch.Tensor,
    norm: nn.Module,
    class_embed: nn.Linear,
    mask_embed: MLP,
) -> MaskPrediction:
    """Prediction head: norm -> class_embed (K+1) and mask_embed, dotted with the mask features.

    Args:
        queries: (B, Q, C) decoder output (before ``norm``).
        mask_features: (B, D, h, w).

    Returns:
        :class:`MaskPrediction` with (B, Q, K+1) logits and (B, Q, h, w) masks (channels-last strides when
        ``mask_features`` has them).
    """
    q = norm(queries)
    masks = mask_product(mask_embed(q), mask_features)  # (B, Q, h, w)
    return MaskPrediction(class_embed(q), masks)
