"""Modulated deformable convolution (DCNv2) in plain PyTorch (SPEC A7 'DCNv2').

Official source: SeMask-FAPN ``DCNv2/dcn_v2.py`` (``DCN``: ``conv_offset_mask`` on a separate offset tensor,
``o1, o2, m = chunk(3)``, ``offset = cat(o1, o2)``, ``mask = sigmoid(m)``) and the kernels' ``modulated_deformable_
im2col`` + ``dmcn_im2col_bilinear`` (``DCNv2/src/{cpu,cuda}``). Same layout as ``torchvision.ops.deform_conv2d``
with a mask. All kernel taps are sampled at once with one ``grid_sample``, so the op runs on any device without a
compiled kernel and traces to ONNX (``GridSample``, opset >= 16).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def modulated_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
) -> torch.Tensor:
    """Deformable convolution with modulation (``dcn_v2_conv``).

    Output pixel (h, w), kernel tap t = (i, j) (row-major) of deformable group g samples input channels of group g
    at (h * stride - padding + i * dilation + dy, w * stride - padding + j * dilation + dx) bilinearly, with zeros
    outside the map (0 unless -1 < position < size), and multiplies the sample by the tap's mask.

    Args:
        x: (B, C, H, W) input; C divisible by the number of deformable groups G.
        offset: (B, 2*G*K, Ho, Wo), K = kh*kw; channel 2*(g*K + t) is dy, 2*(g*K + t) + 1 is dx.
        mask: (B, G*K, Ho, Wo) modulation (already through the sigmoid), channel g*K + t.
        weight: (C_out, C, kh, kw); bias: (C_out,) or None.
        stride, padding, dilation: as for ``F.conv2d`` (same in both directions).

    Returns:
        (B, C_out, Ho, Wo).

    Raises:
        ValueError: channel counts of ``offset``/``mask``/``weight`` that do not fit ``x``.
    """
    b, c, h, w = x.shape
    c_out, c_in, kh, kw = weight.shape
    k = kh * kw
    groups = mask.shape[1] // k  # G (sizes are tensors while tracing: no divmod)
    if c_in != c or groups * k != mask.shape[1] or offset.shape[1] != 2 * mask.shape[1] or c % groups:
        raise ValueError(
            f"DCN shapes do not fit: input {tuple(x.shape)}, offset {tuple(offset.shape)}, "
            f"mask {tuple(mask.shape)}, weight {tuple(weight.shape)}"
        )
    ho, wo = offset.shape[-2:]
    opts = dict(dtype=x.dtype, device=x.device)
    taps_y = (torch.arange(kh, **opts) * dilation).repeat_interleave(kw)  # (K,)
    taps_x = (torch.arange(kw, **opts) * dilation).repeat(kh)
    base_y = torch.arange(ho, **opts) * stride - padding  # (Ho,)
    base_x = torch.arange(wo, **opts) * stride - padding
    off = offset.view(b, groups, k, 2, ho, wo)
    pos_y = base_y.view(-1, 1) + taps_y.view(-1, 1, 1) + off[:, :, :, 0]  # (B, G, K, Ho, Wo) pixels
    pos_x = base_x + taps_x.view(-1, 1, 1) + off[:, :, :, 1]
    # grid_sample(align_corners=False) maps pixel p of a size-n axis to (2p + 1) / n - 1
    grid = torch.stack(((2 * pos_x + 1) / w - 1, (2 * pos_y + 1) / h - 1), dim=-1)  # (B, G, K, Ho, Wo, 2)
    sampled = F.grid_sample(
        x.reshape(b * groups, c // groups, h, w),
        grid.view(b * groups, k * ho, wo, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (B*G, C/G, K*Ho, Wo)
    cols = sampled.view(b, groups, c // groups, k, ho, wo) * mask.view(b, groups, 1, k, ho, wo)
    out = weight.reshape(c_out, c * k) @ cols.reshape(b, c * k, ho * wo)  # (B, C_out, Ho*Wo)
    out = out.view(b, c_out, ho, wo)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class DCN(nn.Module):
    """DCNv2 block whose offsets and masks come from a 3x3 conv on a separate tensor (official ``DCN`` with
    ``extra_offset_mask=True``; keys ``weight``, ``bias``, ``conv_offset_mask.{weight,bias}``).

    Args:
        in_channels, out_channels: channels of the sampled input and of the output (the offset tensor has
            ``in_channels`` too).
        kernel_size: square kernel k; padding k // 2, stride 1, dilation 1.
        deformable_groups: G (``in_channels`` divisible by G).

    Raises:
        ValueError: ``in_channels`` not divisible by ``deformable_groups``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, deformable_groups: int = 8
    ) -> None:
        super().__init__()
        if in_channels % deformable_groups:
            raise ValueError(
                f"in_channels {in_channels} must be divisible by deformable_groups {deformable_groups}"
            )
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        taps = deformable_groups * kernel_size * kernel_size
        self.conv_offset_mask = nn.Conv2d(in_channels, 3 * taps, kernel_size, padding=self.padding)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: weight U(-1/sqrt(n), 1/sqrt(n)) with n = C_in*k*k, zero bias; zero offsets/masks conv
        (so every offset starts at 0 and every mask at 0.5)."""
        bound = 1 / math.sqrt(self.weight[0].numel())
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x: torch.Tensor, offset_feat: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, C_in, H, W) features to sample.
            offset_feat: (B, C_in, H, W) input of ``conv_offset_mask``.

        Returns:
            (B, C_out, H, W).
        """
        om = self.conv_offset_mask(offset_feat)  # (B, 3*G*K, H, W): [o1, o2, m]; cat(o1, o2) = the first 2/3
        taps = om.shape[1] // 3
        return modulated_deform_conv2d(
            x, om[:, : 2 * taps], om[:, 2 * taps :].sigmoid(), self.weight, self.bias, padding=self.padding
        )
